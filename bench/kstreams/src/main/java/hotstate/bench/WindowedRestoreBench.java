package hotstate.bench;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyWindowStore;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.WindowStoreIterator;

/**
 * A cold restore of one windowed count (the DSL's groupByKey().windowedBy(TimeWindows).count(), RocksDB, with
 * Kafka Streams' defaults): the peer of {@code bench/restore.py --windowed}.
 *
 * The caller has filled the changelog {@code <app-id>-store-changelog} in Kafka Streams' windowed format (key:
 * key bytes + 8-byte window start + 4-byte sequence number 0; value: the count as a Long; timestamp: the window's
 * event time) and created the empty source topic with the same partition count. Prints one JSON line: seconds
 * from {@code start()} until RUNNING and every changelog partition reported onRestoreEnd, the restore window,
 * records restored (onBatchRestored's sum: what the restore read), the offsets onRestoreStart announced. Then
 * fetches the windows of the sampled keys (SAMPLE_IN: lines "hex from_ms to_ms") through interactive queries and
 * writes them to SAMPLE_OUT as JSON {hex: [[start, count], ...]}.
 *
 * Usage: java -cp kstreams-restore-bench.jar hotstate.bench.WindowedRestoreBench BOOTSTRAP APP_ID SOURCE_TOPIC
 *        STATE_DIR PARTITIONS TIMEOUT_S SIZE_MS GRACE_MS RETENTION_MS SAMPLE_IN SAMPLE_OUT
 */
public final class WindowedRestoreBench {
    private static final String STORE = "store";

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        String bootstrap = args[0], appId = args[1], source = args[2], stateDir = args[3];
        int partitions = Integer.parseInt(args[4]);
        long timeoutS = Long.parseLong(args[5]);
        long sizeMs = Long.parseLong(args[6]), graceMs = Long.parseLong(args[7]), retentionMs = Long.parseLong(args[8]);
        Path sampleIn = Path.of(args[9]), sampleOut = Path.of(args[10]);

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(source, Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
                .groupByKey()
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(sizeMs), Duration.ofMillis(graceMs)))
                .count(Materialized.<Bytes, Long, WindowStore<Bytes, byte[]>>as(STORE)
                        .withKeySerde(Serdes.Bytes())
                        .withValueSerde(Serdes.Long())
                        .withRetention(Duration.ofMillis(retentionMs)));

        AtomicLong firstStartNs = new AtomicLong(Long.MAX_VALUE);
        AtomicLong lastEndNs = new AtomicLong(0);
        AtomicLong restored = new AtomicLong(0);
        AtomicLong announced = new AtomicLong(0);
        CountDownLatch ended = new CountDownLatch(partitions);
        CountDownLatch running = new CountDownLatch(1);
        AtomicLong runningNs = new AtomicLong(0);

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                firstStartNs.accumulateAndGet(System.nanoTime(), Math::min);
                announced.addAndGet(end - start);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {
                restored.addAndGet(n);
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                lastEndNs.accumulateAndGet(System.nanoTime(), Math::max);
                ended.countDown();
            }
        });
        streams.setStateListener((next, prev) -> {
            if (next == KafkaStreams.State.RUNNING && runningNs.compareAndSet(0, System.nanoTime())) {
                running.countDown();
            }
        });

        long t0 = System.nanoTime();
        streams.start();
        boolean ok = ended.await(timeoutS, TimeUnit.SECONDS) && running.await(timeoutS, TimeUnit.SECONDS);
        long readyNs = Math.max(lastEndNs.get(), runningNs.get());
        int sampled = 0;
        if (ok) {
            ReadOnlyWindowStore<Bytes, Long> view = streams.store(
                    StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.windowStore()));
            HexFormat hex = HexFormat.of();
            List<String> lines = Files.readAllLines(sampleIn);
            try (PrintWriter out = new PrintWriter(Files.newBufferedWriter(sampleOut))) {
                out.print("{");
                for (String line : lines) {
                    String[] f = line.trim().split(" ");
                    if (f.length != 3) {
                        continue;
                    }
                    out.print((sampled++ > 0 ? ", " : "") + "\"" + f[0] + "\": [");
                    try (WindowStoreIterator<Long> it = view.fetch(Bytes.wrap(hex.parseHex(f[0])),
                            Instant.ofEpochMilli(Long.parseLong(f[1])), Instant.ofEpochMilli(Long.parseLong(f[2])))) {
                        boolean first = true;
                        while (it.hasNext()) {
                            KeyValue<Long, Long> kv = it.next();
                            out.print((first ? "" : ", ") + "[" + kv.key + ", " + kv.value + "]");
                            first = false;
                        }
                    }
                    out.print("]");
                }
                out.println("}");
            }
        }
        streams.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(Duration.ofSeconds(30)));
        if (!ok) {
            System.out.println("{\"error\": \"not restored within " + timeoutS + "s\"}");
            System.exit(1);
        }
        System.out.printf("{\"seconds\": %.6f, \"restore_seconds\": %.6f, \"records\": %d, \"records_announced\": %d, "
                        + "\"sample_checked\": %d}%n",
                (readyNs - t0) / 1e9, (lastEndNs.get() - firstStartNs.get()) / 1e9, restored.get(), announced.get(),
                sampled);
    }
}
