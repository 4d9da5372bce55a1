// Process jobs with the real BullMQ Worker until COUNT have completed, then
// print what it processed. usage: node consume.mjs REDIS_URL QUEUE COUNT
// BULLMQ picks the package: "bullmq" (6) or "bullmq5".
const { Worker } = await import(process.env.BULLMQ ?? "bullmq");
import IORedis from "ioredis";

const [url, queueName, count] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const seen = [];
const done = new Promise((resolve) => {
  const worker = new Worker(
    queueName,
    async (job) => {
      seen.push({ id: job.id, name: job.name, data: job.data, attemptsMade: job.attemptsMade, opts: job.opts });
      return { processedBy: "node-bullmq" };
    },
    { connection, drainDelay: 1 },
  );
  worker.on("completed", async () => {
    if (seen.length >= Number(count)) {
      await worker.close();
      resolve();
    }
  });
});
const timeout = setTimeout(() => {
  console.error("timed out waiting for jobs");
  process.exit(3);
}, 20000);
await done;
clearTimeout(timeout);
console.log(JSON.stringify(seen));
await connection.quit();
