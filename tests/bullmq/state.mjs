// Print a job's state and result as the real BullMQ sees them.
// usage: node state.mjs REDIS_URL QUEUE JOB_ID
// BULLMQ picks the package: "bullmq" (6) or "bullmq5".
const { Queue, Job } = await import(process.env.BULLMQ ?? "bullmq");
import IORedis from "ioredis";

const [url, queueName, id] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(queueName, { connection });
const job = await Job.fromId(queue, id);
const state = job ? await job.getState() : "missing";
const counts = await queue.getJobCounts("wait", "active", "completed", "failed", "delayed");
console.log(JSON.stringify({ state, returnvalue: job?.returnvalue ?? null, attemptsMade: job?.attemptsMade ?? null, finishedOn: job?.finishedOn ?? null, counts }));
await queue.close();
await connection.quit();
