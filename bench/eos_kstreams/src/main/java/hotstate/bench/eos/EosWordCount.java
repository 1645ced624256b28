package hotstate.bench.eos;

import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The word count of bench/eos.py on Kafka Streams 4.4: String keys, {@code groupByKey().count()} into a persistent
 * (RocksDB) key-value store "word-counts", Long (8-byte big-endian) counts to the sink topic. Kafka Streams'
 * default settings, with {@code processing.guarantee=exactly_once_v2}; the only other setting is the main
 * consumer's session timeout (a killed member leaves the group only when its session expires; hotstate's
 * runner uses the same value), unless SESSION_TIMEOUT_MS is 0.
 *
 * Prints one JSON object a line on stdout: {@code config} (the settings that matter here, as Kafka Streams
 * resolved them), {@code state} (every KafkaStreams state change), {@code running} (the first RUNNING),
 * {@code restore_start / restore_batch / restore_end} (the global StateRestoreListener, with offsets and
 * totals), {@code closed}. SIGTERM closes it cleanly; SIGKILL is what bench/eos.py uses.
 *
 * Usage: java -jar kstreams-eos-bench.jar BOOTSTRAP APP_ID SOURCE SINK STATE_DIR [SESSION_TIMEOUT_MS]
 */
public final class EosWordCount {
    static final String STORE = "word-counts";
    private static final Object OUT = new Object();

    public static void main(String[] args) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        String bootstrap = args[0], appId = args[1], source = args[2], sink = args[3], stateDir = args[4];
        int sessionTimeoutMs = args.length > 5 ? Integer.parseInt(args[5]) : 6000;

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        if (sessionTimeoutMs > 0) {
            props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), sessionTimeoutMs);
            props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG),
                      Math.max(500, sessionTimeoutMs / 6));
        }

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(source, Consumed.with(Serdes.String(), Serdes.String()))
                .groupByKey()
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE))
                .toStream()
                .to(sink, Produced.with(Serdes.String(), Serdes.Long()));

        StreamsConfig resolved = new StreamsConfig(props);
        StringBuilder cfg = new StringBuilder("{\"ev\": \"config\"");
        for (String name : List.of(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.COMMIT_INTERVAL_MS_CONFIG,
                "enable.transactional.statestores", StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG,
                StreamsConfig.NUM_STREAM_THREADS_CONFIG, StreamsConfig.GROUP_PROTOCOL_CONFIG)) {
            Object v = resolved.originals().containsKey(name) ? resolved.originals().get(name) : valueOrNull(resolved, name);
            cfg.append(", \"").append(name).append("\": \"").append(v).append('"');
        }
        emit(cfg.append(", \"kafka_streams\": \"").append(kafkaVersion())
                .append("\"}").toString());

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                emit(String.format(Locale.ROOT,
                        "{\"ev\": \"restore_start\", \"topic\": \"%s\", \"partition\": %d, \"store\": \"%s\", \"start\": %d, \"end\": %d}",
                        tp.topic(), tp.partition(), store, start, end));
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {
                emit(String.format(Locale.ROOT,
                        "{\"ev\": \"restore_batch\", \"partition\": %d, \"store\": \"%s\", \"batch_end\": %d, \"n\": %d}",
                        tp.partition(), store, batchEnd, n));
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                emit(String.format(Locale.ROOT,
                        "{\"ev\": \"restore_end\", \"partition\": %d, \"store\": \"%s\", \"total\": %d}",
                        tp.partition(), store, total));
            }
        });
        final boolean[] runningSeen = {false};
        streams.setStateListener((next, prev) -> {
            emit(String.format(Locale.ROOT, "{\"ev\": \"state\", \"from\": \"%s\", \"to\": \"%s\"}", prev, next));
            if (next == KafkaStreams.State.RUNNING && !runningSeen[0]) {
                runningSeen[0] = true;
                emit("{\"ev\": \"running\"}");
            }
        });

        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(60));
            emit("{\"ev\": \"closed\"}");
            done.countDown();
        }, "shutdown"));
        streams.start();
        done.await();
    }

    /** The version kafka-clients carries in its jar (the shaded jar has no per-artifact manifest versions). */
    private static String kafkaVersion() {
        try (java.io.InputStream in = EosWordCount.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) {
                p.load(in);
            }
            return p.getProperty("version", "unknown");
        } catch (java.io.IOException e) {
            return "unknown";
        }
    }

    private static Object valueOrNull(StreamsConfig config, String name) {
        try {
            return config.values().get(name);
        } catch (RuntimeException e) {
            return null;
        }
    }

    static void emit(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
