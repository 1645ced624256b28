package hotstate.check;

import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.Properties;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams 4.4's enrichment, the peer of tests/integration/test_joins_vs_kstreams.py: orders (String key:
 * the order id, String value "CUSTOMER_ID,AMOUNT") re-keyed by customer id, joined (inner) with the customers
 * table (String key: the customer id, String value: the country; a tombstone deletes the customer), grouped by
 * country and summed: {@code revenue-by-country}, every update written to OUTPUT as String key and Long (8-byte)
 * value. {@code topology.optimization=all}, so the customers table uses its source topic as its changelog (no
 * changelog topic), as hotstate's app.table does. Commit interval 100 ms.
 *
 * Usage: java -jar kstreams-joins-check.jar BOOTSTRAP APP_ID STATE_DIR GUARANTEE ORDERS CUSTOMERS OUTPUT
 *
 * Prints one JSON object a line on stdout ({@code state} changes, {@code error}); when stdin reaches its end it
 * closes, leaving the group, prints {@code closed} and exits 0.
 */
public final class EnrichmentTotals {
    private static final Object OUT = new Object();

    public static void main(String[] args) {
        if (args.length != 7) {
            System.err.println("usage: BOOTSTRAP APP_ID STATE_DIR GUARANTEE ORDERS CUSTOMERS OUTPUT");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[2]);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[3]);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);
        // The re-keyed orders' repartition topic (before the join) takes the default serdes: Strings.
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);

        StreamsBuilder builder = new StreamsBuilder();
        KTable<String, String> customers = builder.table(args[5], Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("customers"));
        builder.stream(args[4], Consumed.with(Serdes.String(), Serdes.String()))
                .selectKey((orderId, order) -> order.split(",")[0])
                .join(customers, (order, country) -> country + "," + order.split(",")[1])
                .groupBy((customerId, sale) -> sale.split(",")[0], Grouped.with(Serdes.String(), Serdes.String()))
                .aggregate(() -> 0L, (country, sale, total) -> total + Long.parseLong(sale.split(",")[1]),
                        Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("revenue-by-country")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
                .toStream().to(args[6], Produced.with(Serdes.String(), Serdes.Long()));

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

    private static void emit(String line) {
        synchronized (OUT) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
