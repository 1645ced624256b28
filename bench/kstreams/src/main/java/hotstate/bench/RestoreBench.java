package hotstate.bench;

import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * A cold restore of one persistent (RocksDB) key-value store of raw bytes, with Kafka Streams' defaults.
 *
 * The caller has filled the changelog {@code <app-id>-<store>-changelog} (raw key and value bytes, the format
 * of a plain byte-array key-value store) and created the empty source topic with the same partition count.
 * Prints one JSON line: seconds from {@code start()} until the app is RUNNING and every changelog partition
 * reported onRestoreEnd, the restore window (first onRestoreStart to last onRestoreEnd), records restored.
 *
 * Usage: java -jar kstreams-restore-bench.jar BOOTSTRAP APP_ID SOURCE_TOPIC STATE_DIR PARTITIONS TIMEOUT_S
 */
public final class RestoreBench {
    private static final String STORE = "store";

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        String bootstrap = args[0], appId = args[1], source = args[2], stateDir = args[3];
        int partitions = Integer.parseInt(args[4]);
        long timeoutS = Long.parseLong(args[5]);

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);

        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.Bytes(), Serdes.ByteArray()));
        builder.stream(source, Consumed.with(Serdes.Bytes(), Serdes.ByteArray()))
                .process(() -> new Processor<Bytes, byte[], Void, Void>() {
                    private org.apache.kafka.streams.state.KeyValueStore<Bytes, byte[]> store;

                    @Override
                    public void init(org.apache.kafka.streams.processor.api.ProcessorContext<Void, Void> ctx) {
                        store = ctx.getStateStore(STORE);
                    }

                    @Override
                    public void process(Record<Bytes, byte[]> record) {
                        store.put(record.key(), record.value());
                    }
                }, STORE);

        AtomicLong firstStartNs = new AtomicLong(Long.MAX_VALUE);
        AtomicLong lastEndNs = new AtomicLong(0);
        AtomicLong restored = new AtomicLong(0);
        CountDownLatch ended = new CountDownLatch(partitions);
        CountDownLatch running = new CountDownLatch(1);
        AtomicLong runningNs = new AtomicLong(0);

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                firstStartNs.accumulateAndGet(System.nanoTime(), Math::min);
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
        long entries = -1;
        if (ok) {
            ReadOnlyKeyValueStore<Bytes, byte[]> view = streams.store(
                    StoreQueryParameters.fromNameAndType(STORE, QueryableStoreTypes.keyValueStore()));
            entries = view.approximateNumEntries();
        }
        // Leave the group: the next run (--repeat) joins at once instead of waiting out this member's session.
        streams.close(org.apache.kafka.streams.CloseOptions
                .groupMembershipOperation(org.apache.kafka.streams.CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(java.time.Duration.ofSeconds(30)));
        if (!ok) {
            System.out.println("{\"error\": \"not restored within " + timeoutS + "s\"}");
            System.exit(1);
        }
        System.out.printf("{\"seconds\": %.6f, \"restore_seconds\": %.6f, \"records\": %d, \"entries_estimate\": %d}%n",
                (readyNs - t0) / 1e9, (lastEndNs.get() - firstStartNs.get()) / 1e9, restored.get(), entries);
    }
}
