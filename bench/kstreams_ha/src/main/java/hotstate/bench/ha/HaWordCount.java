package hotstate.bench.ha;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.LagInfo;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TaskMetadata;
import org.apache.kafka.streams.ThreadMetadata;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StandbyUpdateListener;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.processor.TaskId;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The word count of bench/ha.py on Kafka Streams 4.4, one instance (process): String words,
 * {@code groupByKey().count()} into the persistent (RocksDB) store "word-counts", Long counts to the sink. Kafka
 * Streams' high-availability settings come from the arguments: num.standby.replicas, acceptable.recovery.lag,
 * max.warmup.replicas, probing.rebalance.interval.ms, group.instance.id (static membership), state.cleanup.delay.ms,
 * processing.guarantee, commit.interval.ms and the main consumer's session timeout. The record cache is off
 * (statestore.cache.max.bytes=0) so that, like hotstate, every update is written to the changelog and the output
 * at once (the scenarios check each word's output sequence).
 *
 * Prints the events of bench/ha_runner.py, one JSON object a line, each with "t" (wall-clock seconds): start,
 * state, tasks (active {task: RESTORING|RUNNING}, standby {task: lag}, offsets {task: offset}), sample (lags and
 * offsets, when they changed), restore_start / restore_batch / restore_end, standby_start / standby_batch /
 * standby_suspended, closing, closed. Kafka Streams does not expose a task's state: an active task counts as
 * RUNNING once it processed a record since it was assigned here, or once the instance is RUNNING (every active
 * task restored) after it was assigned. A task under restoration, which Kafka Streams lists in no thread's
 * metadata, is reported active and RESTORING from its onRestoreStart to its onRestoreEnd.
 *
 * Usage: java -jar kstreams-ha-bench.jar key=value ... (keys: bootstrap app_id state_dir source sink name
 * group_instance_id num_standby_replicas acceptable_recovery_lag max_warmup_replicas probing_rebalance_interval_ms
 * guarantee session_timeout_ms commit_interval_ms state_cleanup_delay_ms sample_ms lag_every_ms).
 * SIGTERM closes it (a dynamic member leaves the group, as hotstate's close does; a static member stays).
 */
public final class HaWordCount {
    static final String STORE = "word-counts";
    private static final Object OUT = new Object();
    private static final Map<Integer, Long> LAST_PROCESSED = new ConcurrentHashMap<>();
    private static final Set<Integer> RESTORING = ConcurrentHashMap.newKeySet();
    private static volatile Map<Integer, LagInfo> lags = Collections.emptyMap();
    private static volatile long runningSince = Long.MAX_VALUE;
    private static volatile boolean done = false;

    public static void main(String[] argv) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        Map<String, String> a = new HashMap<>();
        for (String arg : argv) {
            int eq = arg.indexOf('=');
            a.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        String groupInstanceId = a.getOrDefault("group_instance_id", "");
        int sessionTimeoutMs = Integer.parseInt(a.getOrDefault("session_timeout_ms", "10000"));
        long sampleMs = (long) Double.parseDouble(a.getOrDefault("sample_ms", "20"));
        long lagEveryMs = (long) Double.parseDouble(a.getOrDefault("lag_every_ms", "100"));

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("app_id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state_dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a.getOrDefault("guarantee", "at_least_once"));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.getOrDefault("commit_interval_ms", "100"));
        props.put(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG, a.getOrDefault("num_standby_replicas", "1"));
        props.put(StreamsConfig.ACCEPTABLE_RECOVERY_LAG_CONFIG, a.getOrDefault("acceptable_recovery_lag", "10000"));
        props.put(StreamsConfig.MAX_WARMUP_REPLICAS_CONFIG, a.getOrDefault("max_warmup_replicas", "2"));
        props.put(StreamsConfig.PROBING_REBALANCE_INTERVAL_MS_CONFIG,
                  a.getOrDefault("probing_rebalance_interval_ms", "600000"));
        props.put(StreamsConfig.STATE_CLEANUP_DELAY_MS_CONFIG, a.getOrDefault("state_cleanup_delay_ms", "600000"));
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), sessionTimeoutMs);
        props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG),
                  Math.max(100, Math.min(3000, sessionTimeoutMs / 3)));
        if (!groupInstanceId.isEmpty()) {
            props.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), groupInstanceId);
        }

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(a.get("source"), Consumed.with(Serdes.String(), Serdes.String()))
                .processValues(() -> new FixedKeyProcessor<String, String, String>() {
                    private FixedKeyProcessorContext<String, String> ctx;

                    @Override
                    public void init(FixedKeyProcessorContext<String, String> context) {
                        ctx = context;
                    }

                    @Override
                    public void process(FixedKeyRecord<String, String> record) {
                        LAST_PROCESSED.put(ctx.taskId().partition(), System.currentTimeMillis());
                        ctx.forward(record);
                    }
                })
                .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE)
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
                .toStream()
                .to(a.get("sink"), Produced.with(Serdes.String(), Serdes.Long()));

        Map<String, Object> cfg = new TreeMap<>();
        for (String k : props.stringPropertyNames()) {
            cfg.put(k, props.getProperty(k));
        }
        for (Object k : props.keySet()) {
            cfg.put(k.toString(), String.valueOf(props.get(k)));
        }
        cfg.remove(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG);
        emit("start", "name", a.get("name"), "pid", ProcessHandle.current().pid(), "config", cfg);

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                RESTORING.add(tp.partition());
                emit("restore_start", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "start", start, "end", end);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {
                emit("restore_batch", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "batch_end", batchEnd, "n", n);
            }

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                RESTORING.remove(tp.partition());
                emit("restore_end", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "total", total);
            }

            @Override
            public void onRestoreSuspended(TopicPartition tp, String store, long total) {
                RESTORING.remove(tp.partition());
                emit("restore_suspended", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "total", total);
            }
        });
        streams.setStandbyUpdateListener(new StandbyUpdateListener() {
            @Override
            public void onUpdateStart(TopicPartition tp, String store, long start) {
                emit("standby_start", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "start", start);
            }

            @Override
            public void onBatchLoaded(TopicPartition tp, String store, TaskId task, long batchEnd, long n, long end) {
                emit("standby_batch", "partition", tp.partition(), "task", task.toString(), "store", store,
                     "batch_end", batchEnd, "n", n, "end", end);
            }

            @Override
            public void onUpdateSuspended(TopicPartition tp, String store, long offset, long end, SuspendReason reason) {
                emit("standby_suspended", "partition", tp.partition(), "task", "0_" + tp.partition(), "store", store,
                     "offset", offset, "end", end, "reason", reason.name());
            }
        });
        streams.setStateListener((next, prev) -> {
            if (next == KafkaStreams.State.RUNNING) {
                runningSince = System.currentTimeMillis();
            } else {
                runningSince = Long.MAX_VALUE;
            }
            emit("state", "state", next.name(), "from", prev.name());
        });

        CountDownLatch closed = new CountDownLatch(1);
        boolean isStatic = !groupInstanceId.isEmpty();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            emit("closing");
            CloseOptions opts = CloseOptions.timeout(Duration.ofSeconds(60)).withGroupMembershipOperation(
                    isStatic ? CloseOptions.GroupMembershipOperation.DEFAULT
                             : CloseOptions.GroupMembershipOperation.LEAVE_GROUP);
            boolean clean = streams.close(opts);
            try {
                Thread.sleep(2 * sampleMs);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
            done = true;
            emit("closed", "clean", clean, "state", streams.state().name());
            closed.countDown();
        }, "shutdown"));

        Thread lagThread = new Thread(() -> {
            while (!done) {
                try {
                    Map<String, Map<Integer, LagInfo>> all = streams.allLocalStorePartitionLags();
                    Map<Integer, LagInfo> mine = all.get(STORE);
                    lags = mine == null ? Collections.emptyMap() : new HashMap<>(mine);
                } catch (RuntimeException e) {
                    // not running (yet / any more): keep the last lags
                }
                sleep(lagEveryMs);
            }
        }, "ha-lags");
        lagThread.setDaemon(true);
        Thread sampler = new Thread(() -> sample(streams, sampleMs, lagEveryMs), "ha-sampler");
        sampler.setDaemon(true);
        streams.start();
        lagThread.start();
        sampler.start();
        closed.await();
    }

    /** Samples the instance's tasks; prints "tasks" on any change of the task set or a task's state. */
    private static void sample(KafkaStreams streams, long sampleMs, long lagEveryMs) {
        Map<String, Long> appearedAt = new HashMap<>();
        String lastShape = null;
        String lastLags = null;
        long nextLags = 0;
        long previousSample = System.currentTimeMillis();
        while (!done) {
            long now = System.currentTimeMillis();
            final long prev = previousSample;  // a task first seen now appeared after the previous sample
            Set<ThreadMetadata> threads;
            try {
                threads = streams.metadataForLocalThreads();
            } catch (RuntimeException e) {
                threads = Collections.emptySet();
            }
            Map<String, Object> active = new TreeMap<>();
            Map<String, Object> standby = new TreeMap<>();
            Map<String, Object> offsets = new TreeMap<>();
            Map<Integer, LagInfo> lagNow = lags;
            for (ThreadMetadata tm : threads) {
                for (TaskMetadata t : tm.activeTasks()) {
                    String id = t.taskId().toString();
                    int p = t.taskId().partition();
                    long since = appearedAt.computeIfAbsent(id, k -> prev);
                    Long processed = LAST_PROCESSED.get(p);
                    boolean running = (processed != null && processed >= since)
                            || (runningSince != Long.MAX_VALUE && runningSince >= since && !RESTORING.contains(p));
                    active.put(id, running ? "RUNNING" : "RESTORING");
                    LagInfo li = lagNow.get(p);
                    offsets.put(id, li == null ? null : li.currentOffsetPosition());
                }
                for (TaskMetadata t : tm.standbyTasks()) {
                    String id = t.taskId().toString();
                    LagInfo li = lagNow.get(t.taskId().partition());
                    standby.put(id, li == null ? null : li.offsetLag());
                    offsets.put(id, li == null ? null : li.currentOffsetPosition());
                }
            }
            // Kafka Streams lists a task under restoration in no thread's metadata: its restore listener tells
            for (Integer p : RESTORING) {
                String id = "0_" + p;
                if (!active.containsKey(id)) {
                    appearedAt.putIfAbsent(id, prev);
                    active.put(id, "RESTORING");
                    LagInfo li = lagNow.get(p);
                    offsets.put(id, li == null ? null : li.currentOffsetPosition());
                }
            }
            appearedAt.keySet().retainAll(active.keySet());
            String shape = active + "|" + standby.keySet();
            String lagKey = standby + "|" + offsets;
            if (!shape.equals(lastShape)) {
                emit("tasks", "active", active, "standby", standby, "offsets", offsets);
                lastShape = shape;
                lastLags = lagKey;
                nextLags = now + lagEveryMs;
            } else if (!lagKey.equals(lastLags) && now >= nextLags) {
                emit("sample", "standby", standby, "offsets", offsets);
                lastLags = lagKey;
                nextLags = now + lagEveryMs;
            }
            previousSample = now;
            sleep(sampleMs);
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static void emit(String ev, Object... kv) {
        StringBuilder sb = new StringBuilder(128);
        sb.append("{\"t\": ").append(String.format(Locale.ROOT, "%.3f", System.currentTimeMillis() / 1000.0));
        sb.append(", \"ev\": ");
        json(sb, ev);
        for (int i = 0; i + 1 < kv.length; i += 2) {
            sb.append(", ");
            json(sb, kv[i].toString());
            sb.append(": ");
            json(sb, kv[i + 1]);
        }
        sb.append('}');
        synchronized (OUT) {
            System.out.println(sb);
            System.out.flush();
        }
    }

    private static void json(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Number || v instanceof Boolean) {
            sb.append(v);
        } else if (v instanceof Map<?, ?> m) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : new ArrayList<>(m.entrySet())) {
                if (!first) {
                    sb.append(", ");
                }
                first = false;
                json(sb, String.valueOf(e.getKey()));
                sb.append(": ");
                json(sb, e.getValue());
            }
            sb.append('}');
        } else {
            String s = v.toString();
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }
    }
}
