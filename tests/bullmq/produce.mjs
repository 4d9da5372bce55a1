// Add one job with the real BullMQ and print its id.
// usage: node produce.mjs REDIS_URL QUEUE NAME JSON_DATA
// BULLMQ picks the package: "bullmq" (6) or "bullmq5".
const { Queue } = await import(process.env.BULLMQ ?? "bullmq");
import IORedis from "ioredis";

const [url, queueName, jobName, data] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(queueName, { connection });
const job = await queue.add(jobName, JSON.parse(data), { attempts: 3, backoff: { type: "exponential", delay: 100 } });
console.log(JSON.stringify({ id: job.id }));
await queue.close();
await connection.quit();
