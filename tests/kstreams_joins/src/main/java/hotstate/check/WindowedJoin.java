package hotstate.check;

import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.Properties;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.ValueJoiner;

/**
 * Kafka Streams 4.4's windowed stream-stream join, the peer of tests/integration/test_stream_joins_vs_kstreams.py:
 * LEFT and RIGHT (String keys and values) joined with {@code JoinWindows.ofTimeDifferenceAndGrace(DIFF_MS,
 * GRACE_MS)}, KIND one of inner / left / outer; each result is written to OUTPUT as a String key and a JSON array
 * {@code ["left value", "right value"]} (null for a missing side). Commit interval 100 ms.
 *
 * Usage: java -cp kstreams-joins-check.jar hotstate.check.WindowedJoin BOOTSTRAP APP_ID STATE_DIR KIND LEFT RIGHT
 * OUTPUT DIFF_MS GRACE_MS
 *
 * Prints one JSON object a line on stdout ({@code state} changes, {@code error}); when stdin reaches its end it
 * closes, leaving the group, prints {@code closed} and exits 0.
 */
public final class WindowedJoin {
    private static final Object OUT = new Object();

    public static void main(String[] args) {
        if (args.length != 9) {
            System.err.println("usage: BOOTSTRAP APP_ID STATE_DIR KIND LEFT RIGHT OUTPUT DIFF_MS GRACE_MS");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[2]);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        // Unjoined left / outer results as soon as their window closes, not throttled to one emit a second of
        // wall-clock time (Kafka Streams' internal setting; its TopologyTestDriver sets it to 0 too).
        props.put(StreamsConfig.InternalConfig.EMIT_INTERVAL_MS_KSTREAMS_OUTER_JOIN_SPURIOUS_RESULTS_FIX, 0L);

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> left = builder.stream(args[4], Consumed.with(Serdes.String(), Serdes.String()));
        KStream<String, String> right = builder.stream(args[5], Consumed.with(Serdes.String(), Serdes.String()));
        JoinWindows window = JoinWindows.ofTimeDifferenceAndGrace(Duration.ofMillis(Long.parseLong(args[7])),
                Duration.ofMillis(Long.parseLong(args[8])));
        ValueJoiner<String, String, String> joiner = (l, r) -> "[" + json(l) + ", " + json(r) + "]";
        StreamJoined<String, String, String> serdes = StreamJoined.with(Serdes.String(), Serdes.String(),
                Serdes.String());
        KStream<String, String> joined;
        switch (args[3]) {
            case "inner": joined = left.join(right, joiner, window, serdes); break;
            case "left": joined = left.leftJoin(right, joiner, window, serdes); break;
            case "outer": joined = left.outerJoin(right, joiner, window, serdes); break;
            default: throw new IllegalArgumentException("KIND must be inner, left or outer: " + args[3]);
        }
        joined.to(args[6], Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(props), props);
        streams.setStateListener((next, prev) -> emit(
                "{\"ev\": \"state\", \"from\": \"" + prev + "\", \"to\": \"" + next + "\"}"));
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
        boolean clean = streams.close(CloseOptions.timeout(Duration.ofSeconds(30))
                .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
        emit("{\"ev\": \"closed\", \"clean\": " + clean + "}");
        System.exit(clean ? 0 : 1);
    }

    /** The test's values are plain words: quoting is enough. */
    private static String json(String s) {
        return s == null ? "null" : "\"" + s + "\"";
    }

    private static void emit(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
