// Readiness probe for the test Kafka broker, used by ensure.sh when no Python with kafka-python
// is around. Run as a single-file program: java -cp '.cache/kafka/libs/*' KafkaReady.java BOOTSTRAP SECONDS
// Exit 0 when the broker answers metadata requests with at least one live broker, 1 otherwise.
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        String last = "no attempt made";
        while (System.nanoTime() < deadline) {
            long wait = Math.max(1000, Math.min(10000, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
            Properties p = new Properties();
            p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(AdminClientConfig.CLIENT_ID_CONFIG, "wispgate-ensure");
            p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, Long.toString(wait));
            p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, Long.toString(wait));
            Admin admin = Admin.create(p);
            try {
                int n = admin.describeCluster().nodes().get(wait, TimeUnit.MILLISECONDS).size();
                if (n == 0) throw new IllegalStateException("describeCluster reported no live broker");
                admin.listTopics().names().get(wait, TimeUnit.MILLISECONDS);
                System.exit(0);
            } catch (Exception e) {
                last = e.toString();
            } finally {
                admin.close(Duration.ofSeconds(1));
            }
            Thread.sleep(1000);
        }
        System.err.println("kafka at " + bootstrap + " not ready after " + args[1] + "s: " + last);
        System.exit(1);
    }
}
