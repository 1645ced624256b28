package hotstate.check;

import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.SlidingWindows;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.kstream.WindowedSerdes;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams 4.4's windowed count, the peer of tests/integration/test_windowed_vs_kstreams.py: String keys
 * (values ignored) from one input topic, {@code groupByKey().windowedBy(windows).count()} for each window spec
 * on the command line (TimeWindows, SessionWindows or SlidingWindows), every update written to the spec's output
 * topic with Kafka Streams' windowed key (time and sliding windows: {@code TimeWindowedSerializer}, key bytes +
 * 8-byte big-endian window start; sessions: {@code SessionWindowedSerializer}, key bytes + 8-byte end + 8-byte
 * start; a merged session's tombstone has no value) and Long (8-byte) counts. The
 * record cache is off and the commit interval 100 ms, so every update is emitted. A spec may name a second output
 * topic for {@code suppress(untilWindowCloses(unbounded()))} of the same count: one final result per window.
 * Store retention is Kafka Streams' default (size + grace).
 *
 * Usage: java -jar kstreams-windows-check.jar BOOTSTRAP APP_ID STATE_DIR GUARANTEE INPUT SPEC...
 *   GUARANTEE: at_least_once | exactly_once_v2
 *   SPEC: OUTPUT_TOPIC:SIZE_MS:ADVANCE_MS:GRACE_MS[:SUPPRESSED_OUTPUT_TOPIC]          (TimeWindows)
 *       | OUTPUT_TOPIC:session:GAP_MS:GRACE_MS[:SUPPRESSED_OUTPUT_TOPIC]            (SessionWindows)
 *       | OUTPUT_TOPIC:sliding:DIFFERENCE_MS:GRACE_MS[:SUPPRESSED_OUTPUT_TOPIC]     (SlidingWindows)
 *
 * Prints one JSON object a line on stdout: {@code config}, {@code state} (every state change), and when stdin
 * reaches its end (the test closes it once the app's committed offsets reached the input's end): {@code metrics}
 * with the task-level {@code dropped-records-total} per task id (the windowed aggregation counts a record once
 * per closed window it is dropped for, and once per record without a key), then {@code closed} after a clean
 * close that leaves the group, and exits 0. Run again with the same APP_ID and STATE_DIR, it restarts.
 */
public final class WindowedCounts {
    private static final Object OUT = new Object();

    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println("usage: BOOTSTRAP APP_ID STATE_DIR GUARANTEE INPUT "
                    + "OUT:SIZE_MS:ADVANCE_MS:GRACE_MS[:SUPPRESSED_OUT]...");
            System.exit(2);
        }
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        String bootstrap = args[0], appId = args[1], stateDir = args[2], guarantee = args[3], input = args[4];

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, byte[]> stream = builder.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()));
        StringBuilder specs = new StringBuilder();
        for (int i = 5; i < args.length; i++) {
            String[] spec = args[i].split(":");
            String kind = spec.length > 1 && (spec[1].equals("session") || spec[1].equals("sliding")) ? spec[1] : "time";
            int fields = 4;  // OUT:SIZE:ADVANCE:GRACE or OUT:KIND:MS:GRACE, then an optional suppressed output
            if (spec.length < fields || spec.length > fields + 1) {
                throw new IllegalArgumentException("bad spec " + args[i] + ": OUT:SIZE:ADVANCE:GRACE[:SUPPRESSED], "
                        + "OUT:session:GAP:GRACE[:SUPPRESSED] or OUT:sliding:DIFFERENCE:GRACE[:SUPPRESSED]");
            }
            String store = "counts-" + (i - 5);
            String suppressed = spec.length == fields + 1 ? spec[fields] : null;
            if (kind.equals("session")) {
                long gap = Long.parseLong(spec[2]), grace = Long.parseLong(spec[3]);
                KTable<Windowed<String>, Long> counts = stream.groupByKey()
                        .windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofMillis(gap),
                                Duration.ofMillis(grace)))
                        .count(Materialized.<String, Long, SessionStore<Bytes, byte[]>>as(store)
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()));
                write(counts, WindowedSerdes.sessionWindowedSerdeFrom(String.class), spec[0], suppressed);
            } else {
                TimeWindows timeWindows = null;
                SlidingWindows slidingWindows = null;
                long size;
                if (kind.equals("sliding")) {
                    size = Long.parseLong(spec[2]);
                    slidingWindows = SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(size),
                            Duration.ofMillis(Long.parseLong(spec[3])));
                } else {
                    size = Long.parseLong(spec[1]);
                    long advance = Long.parseLong(spec[2]), grace = Long.parseLong(spec[3]);
                    timeWindows = TimeWindows.ofSizeAndGrace(Duration.ofMillis(size), Duration.ofMillis(grace))
                            .advanceBy(Duration.ofMillis(advance));
                }
                Materialized<String, Long, WindowStore<Bytes, byte[]>> materialized =
                        Materialized.<String, Long, WindowStore<Bytes, byte[]>>as(store)
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long());
                KTable<Windowed<String>, Long> counts = timeWindows != null
                        ? stream.groupByKey().windowedBy(timeWindows).count(materialized)
                        : stream.groupByKey().windowedBy(slidingWindows).count(materialized);
                write(counts, WindowedSerdes.timeWindowedSerdeFrom(String.class, size), spec[0], suppressed);
            }
            specs.append(specs.length() == 0 ? "" : ", ").append('"').append(args[i]).append('"');
        }
        emit(String.format(Locale.ROOT, "{\"ev\": \"config\", \"kafka_streams\": \"%s\", \"guarantee\": \"%s\", "
                + "\"specs\": [%s]}", kafkaVersion(), guarantee, specs));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((next, prev) -> emit(
                String.format(Locale.ROOT, "{\"ev\": \"state\", \"from\": \"%s\", \"to\": \"%s\"}", prev, next)));
        streams.setUncaughtExceptionHandler(exc -> {
            emit("{\"ev\": \"error\", \"error\": \"" + String.valueOf(exc).replace('"', '\'') + "\"}");
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        streams.start();

        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // Wait for the end of stdin: the test's signal to stop.
            }
        } catch (IOException ignored) {
            // stdin gone: stop as well
        }
        emit("{\"ev\": \"metrics\", \"dropped_records_total\": " + droppedPerTask(streams) + "}");
        // Leave the group on close: a restart then joins at once instead of waiting for the old session to expire.
        boolean clean = streams.close(CloseOptions.timeout(Duration.ofSeconds(30))
                .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
        emit("{\"ev\": \"closed\", \"clean\": " + clean + "}");
        System.exit(clean ? 0 : 1);
    }

    /** Every update of {@code counts} to {@code out}; its final results too when {@code suppressed} is given. */
    private static void write(KTable<Windowed<String>, Long> counts, Serde<Windowed<String>> key, String out,
                              String suppressed) {
        counts.toStream().to(out, Produced.with(key, Serdes.Long()));
        if (suppressed != null) {
            counts.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                    .toStream().to(suppressed, Produced.with(key, Serdes.Long()));
        }
    }

    /** The task-level dropped-records-total per task id, as a JSON object (tasks with none included). */
    private static String droppedPerTask(KafkaStreams streams) {
        Map<String, Double> byTask = new TreeMap<>();
        for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
            MetricName name = e.getKey();
            if (name.name().equals("dropped-records-total") && name.group().equals("stream-task-metrics")) {
                byTask.merge(name.tags().get("task-id"), ((Number) e.getValue().metricValue()).doubleValue(),
                        Double::sum);
            }
        }
        StringBuilder json = new StringBuilder("{");
        for (Map.Entry<String, Double> e : byTask.entrySet()) {
            json.append(json.length() == 1 ? "" : ", ").append('"').append(e.getKey()).append("\": ")
                    .append(e.getValue().longValue());
        }
        return json.append('}').toString();
    }

    /** The version kafka-clients carries in its jar (the shaded jar has no per-artifact manifest versions). */
    private static String kafkaVersion() {
        try (InputStream in = WindowedCounts.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) {
                p.load(in);
            }
            return p.getProperty("version", "unknown");
        } catch (IOException e) {
            return "unknown";
        }
    }

    private static void emit(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
