// Put a BullMQ queue into a known state with the real bullmq package.
// usage: node scenario.mjs REDIS_URL QUEUE SCENARIO
//   healthy: 20 jobs completed
//   failing: 20 jobs, 10 of them failed
//   old-waiting: 5 completed, one job waiting for an hour (no worker)
//   stalled: one job taken by a worker that died (its lock expires)
//   stalled-many: 50 jobs taken at once by a worker that died
// BULLMQ picks the package: "bullmq" (6) or "bullmq5".
const { Queue, Worker } = await import(process.env.BULLMQ ?? "bullmq");
import IORedis from "ioredis";

const [url, name, scenario] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(name, { connection });

async function runJobs(jobs, handler) {
  let left = jobs;
  await new Promise((resolve) => {
    const worker = new Worker(name, handler, { connection, drainDelay: 1 });
    const done = async () => {
      left -= 1;
      if (left === 0) {
        await worker.close();
        resolve();
      }
    };
    worker.on("completed", done);
    worker.on("failed", done);
  });
}

if (scenario === "healthy" || scenario === "failing") {
  for (let i = 0; i < 20; i++) await queue.add("shopify-webhook", { i }, { attempts: 1 });
  await runJobs(20, async (job) => {
    if (scenario === "failing" && job.data.i % 2 === 0) throw new Error(`upstream 502 for ${job.data.i}`);
    return { ok: true };
  });
} else if (scenario === "old-waiting") {
  for (let i = 0; i < 5; i++) await queue.add("shopify-webhook", { i });
  await runJobs(5, async () => ({ ok: true }));
  await queue.add("shopify-webhook", { late: true }, { timestamp: Date.now() - 3600 * 1000 });
} else if (scenario === "stalled") {
  await queue.add("shopify-webhook", { doomed: true });
  // A worker takes the job and its process dies: the lock (500 ms) lapses.
  new Worker(name, () => process.exit(0), { connection, lockDuration: 500 });
  await new Promise(() => {});
} else if (scenario === "stalled-many") {
  await queue.addBulk(Array.from({ length: 50 }, (_, i) => ({ name: "shopify-webhook", data: { i } })));
  let taken = 0;
  new Worker(
    name,
    () => {
      taken += 1;
      if (taken === 50) process.exit(0);
      return new Promise(() => {});
    },
    { connection, lockDuration: 500, concurrency: 50 },
  );
  await new Promise(() => {});
} else {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
console.log(JSON.stringify({ scenario, counts: await queue.getJobCounts() }));
await queue.close();
await connection.quit();
