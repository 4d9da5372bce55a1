//! A BullMQ-compatible queue on Redis.
//!
//! Keys follow BullMQ 5: `<prefix>:<queue>:wait` / `:active` / `:paused`
//! lists, `:delayed` / `:prioritized` / `:completed` / `:failed` sorted sets,
//! `:events` stream, `:meta` hash, `:id` counter, `:marker` sorted set that
//! wakes workers, and a hash per job (`name`, `data`, `opts`, `timestamp`,
//! `delay`, `priority`, `processedOn`, `finishedOn`, `failedReason`,
//! `returnvalue`, `atm`, `ats`) with a `:lock` key while a worker holds it.
//! Each state change is one Lua script, as in BullMQ, so it is atomic with
//! respect to Node workers on the same queue. Prioritized jobs are left to
//! BullMQ's own workers.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

use super::{Backoff, FailOutcome, Job, JobOptions, QueueCounts, QueueError};

const MAX_EVENTS: u32 = 10_000;
const LOCK_MS: u64 = 30_000;

// KEYS: wait, paused, meta, id, events, marker
// ARGV: job key prefix, name, data, opts, timestamp, max events, custom id ("" for none)
// A custom id that exists already adds nothing ("duplicated"), as in BullMQ.
const ADD: &str = r#"
local maxEvents = redis.call("HGET", KEYS[3], "opts.maxLenEvents")
if not maxEvents then
  maxEvents = ARGV[6]
  redis.call("HSET", KEYS[3], "opts.maxLenEvents", maxEvents)
end
local jobCounter = tostring(redis.call("INCR", KEYS[4]))
local jobId = jobCounter
if ARGV[7] ~= "" then
  jobId = ARGV[7]
  if redis.call("EXISTS", ARGV[1] .. jobId) == 1 then
    redis.call("XADD", KEYS[5], "MAXLEN", "~", maxEvents, "*", "event", "duplicated", "jobId", jobId)
    return jobId
  end
end
local jobKey = ARGV[1] .. jobId
redis.call("HMSET", jobKey, "name", ARGV[2], "data", ARGV[3], "opts", ARGV[4],
  "timestamp", ARGV[5], "delay", 0, "priority", 0)
redis.call("XADD", KEYS[5], "MAXLEN", "~", maxEvents, "*", "event", "added", "jobId", jobId, "name", ARGV[2])
if redis.call("HEXISTS", KEYS[3], "paused") == 1 then
  redis.call("LPUSH", KEYS[2], jobId)
else
  redis.call("LPUSH", KEYS[1], jobId)
  redis.call("ZADD", KEYS[6], 0, "0")
end
redis.call("XADD", KEYS[5], "MAXLEN", "~", maxEvents, "*", "event", "waiting", "jobId", jobId)
return jobId
"#;

// KEYS: wait, active, delayed, events, marker, meta
// ARGV: job key prefix, token, lock ms, now, most jobs to take
// Returns {id, fields} for each job taken, oldest first.
const MOVE_TO_ACTIVE: &str = r#"
local now = tonumber(ARGV[4])
local due = redis.call("ZRANGEBYSCORE", KEYS[3], 0, (now + 1) * 0x1000 - 1, "LIMIT", 0, 1000)
if #due > 0 then
  redis.call("ZREM", KEYS[3], unpack(due))
  for _, id in ipairs(due) do
    redis.call("LPUSH", KEYS[1], id)
    redis.call("HSET", ARGV[1] .. id, "delay", 0)
    redis.call("XADD", KEYS[4], "*", "event", "waiting", "jobId", id, "prev", "delayed")
  end
  redis.call("ZADD", KEYS[5], 0, "0")
end
local taken = {}
if redis.call("HEXISTS", KEYS[6], "paused") == 1 then return taken end
for _ = 1, tonumber(ARGV[5]) do
  local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[2])
  if not id then break end
  local jobKey = ARGV[1] .. id
  redis.call("SET", jobKey .. ":lock", ARGV[2], "PX", ARGV[3])
  redis.call("HSET", jobKey, "processedOn", ARGV[4])
  redis.call("HINCRBY", jobKey, "ats", 1)
  redis.call("XADD", KEYS[4], "*", "event", "active", "jobId", id, "prev", "waiting")
  taken[#taken + 1] = {id, redis.call("HGETALL", jobKey)}
end
return taken
"#;

// KEYS: active, completed, events
// ARGV: job key prefix, now, then id, token, return value (JSON) per job
// Returns per job 0, or -6 when the lock is not this worker's, -3 when the
// job is not active.
const COMPLETE_ALL: &str = r#"
local codes = {}
for i = 3, #ARGV, 3 do
  local id, token, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local jobKey = ARGV[1] .. id
  local code = 0
  if redis.call("GET", jobKey .. ":lock") ~= token then
    code = -6
  else
    redis.call("DEL", jobKey .. ":lock")
    if redis.call("LREM", KEYS[1], -1, id) < 1 then
      code = -3
    else
      redis.call("ZADD", KEYS[2], ARGV[2], id)
      redis.call("HINCRBY", jobKey, "atm", 1)
      redis.call("HSET", jobKey, "returnvalue", value, "finishedOn", ARGV[2])
      redis.call("XADD", KEYS[3], "*", "event", "completed", "jobId", id, "returnvalue", value, "prev", "active")
    end
  end
  codes[#codes + 1] = code
end
return codes
"#;

// KEYS: active, failed, delayed, wait, events, job key, lock key, marker
// ARGV: id, token, reason, now, retry (1/0), delay ms
const FAIL: &str = r#"
local lock = redis.call("GET", KEYS[7])
if lock ~= ARGV[2] then return -6 end
redis.call("DEL", KEYS[7])
if redis.call("LREM", KEYS[1], -1, ARGV[1]) < 1 then return -3 end
redis.call("HINCRBY", KEYS[6], "atm", 1)
redis.call("HSET", KEYS[6], "failedReason", ARGV[3])
local now = tonumber(ARGV[4])
if ARGV[5] == "1" then
  local delay = tonumber(ARGV[6])
  if delay > 0 then
    redis.call("ZADD", KEYS[3], (now + delay) * 0x1000, ARGV[1])
    redis.call("HSET", KEYS[6], "delay", delay)
    redis.call("XADD", KEYS[5], "*", "event", "delayed", "jobId", ARGV[1], "delay", now + delay)
  else
    redis.call("LPUSH", KEYS[4], ARGV[1])
    redis.call("ZADD", KEYS[8], 0, "0")
    redis.call("XADD", KEYS[5], "*", "event", "waiting", "jobId", ARGV[1], "prev", "failed")
  end
  return 1
end
redis.call("ZADD", KEYS[2], now, ARGV[1])
redis.call("HSET", KEYS[6], "finishedOn", now)
redis.call("XADD", KEYS[5], "*", "event", "failed", "jobId", ARGV[1], "failedReason", ARGV[3], "prev", "active")
return 0
"#;

// KEYS: active, wait, events, marker; ARGV: job key prefix
const RECOVER_STALLED: &str = r#"
local moved = 0
for _, id in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
  if redis.call("EXISTS", ARGV[1] .. id .. ":lock") == 0 then
    redis.call("LREM", KEYS[1], 1, id)
    redis.call("RPUSH", KEYS[2], id)
    redis.call("HINCRBY", ARGV[1] .. id, "stc", 1)
    redis.call("XADD", KEYS[3], "*", "event", "stalled", "jobId", id)
    moved = moved + 1
  end
end
if moved > 0 then redis.call("ZADD", KEYS[4], 0, "0") end
return moved
"#;

#[derive(Clone)]
pub struct BullmqQueue {
    conn: ConnectionManager,
    /// `<prefix>:<queue>:`
    base: String,
}

/// The scripts, hashed once (`EVALSHA`, loaded on first use).
struct Scripts {
    add: Script,
    move_to_active: Script,
    complete_all: Script,
    fail: Script,
    recover_stalled: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
        add: Script::new(ADD),
        move_to_active: Script::new(MOVE_TO_ACTIVE),
        complete_all: Script::new(COMPLETE_ALL),
        fail: Script::new(FAIL),
        recover_stalled: Script::new(RECOVER_STALLED),
    });
    &SCRIPTS
}

/// A job as its hash holds it (`HGETALL`), taken under `token`.
fn job_from_hash(id: String, fields: &[(String, String)], token: &str) -> Job {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let data = match serde_json::from_str::<Value>(get("data").unwrap_or("{}")) {
        Ok(v) => v,
        Err(e) => Value::String(format!("<malformed job data: {e}>")),
    };
    let opts = get("opts")
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .map(|o| parse_opts(&o))
        .unwrap_or(JobOptions {
            attempts: 1,
            backoff: Backoff::Fixed { delay: 0 },
            job_id: None,
        });
    Job {
        name: get("name").unwrap_or_default().to_string(),
        attempts_made: get("atm").and_then(|a| a.parse().ok()).unwrap_or(0),
        data,
        opts,
        token: token.to_string(),
        id,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl BullmqQueue {
    pub async fn connect(url: &str, prefix: &str, queue: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(BullmqQueue {
            conn,
            base: format!("{prefix}:{queue}:"),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    pub async fn add(
        &self,
        name: &str,
        data: &Value,
        opts: &JobOptions,
    ) -> Result<String, QueueError> {
        let mut opts_json = json!({
            "attempts": opts.attempts,
            "backoff": opts.backoff,
        });
        if let Some(id) = &opts.job_id {
            opts_json["jobId"] = json!(id);
        }
        let mut conn = self.conn.clone();
        let id: String = scripts()
            .add
            .key(self.key("wait"))
            .key(self.key("paused"))
            .key(self.key("meta"))
            .key(self.key("id"))
            .key(self.key("events"))
            .key(self.key("marker"))
            .arg(&self.base)
            .arg(name)
            .arg(data.to_string())
            .arg(opts_json.to_string())
            .arg(now_ms())
            .arg(MAX_EVENTS)
            .arg(opts.job_id.as_deref().unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(id)
    }

    async fn try_take(&self, max: usize) -> Result<Vec<Job>, QueueError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut conn = self.conn.clone();
        let taken: Vec<(String, Vec<(String, String)>)> = scripts()
            .move_to_active
            .key(self.key("wait"))
            .key(self.key("active"))
            .key(self.key("delayed"))
            .key(self.key("events"))
            .key(self.key("marker"))
            .key(self.key("meta"))
            .arg(&self.base)
            .arg(&token)
            .arg(LOCK_MS)
            .arg(now_ms())
            .arg(max.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(taken
            .into_iter()
            .map(|(id, fields)| job_from_hash(id, &fields, &token))
            .collect())
    }

    pub async fn next_batch(&self, max: usize, wait: Duration) -> Result<Vec<Job>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let jobs = self.try_take(max).await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(jobs);
            }
            tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
        }
    }

    pub async fn complete_all(&self, done: &[(&Job, &Value)]) -> Result<Vec<bool>, QueueError> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = scripts().complete_all.key(self.key("active"));
        invocation
            .key(self.key("completed"))
            .key(self.key("events"))
            .arg(&self.base)
            .arg(now_ms());
        for (job, value) in done {
            invocation
                .arg(&job.id)
                .arg(&job.token)
                .arg(value.to_string());
        }
        let codes: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        Ok(codes.into_iter().map(|c| c == 0).collect())
    }

    pub async fn fail(&self, job: &Job, reason: &str) -> Result<FailOutcome, QueueError> {
        let attempts_made = job.attempts_made + 1;
        let retry = attempts_made < job.opts.attempts;
        let delay = if retry {
            job.opts.backoff.delay_ms(attempts_made)
        } else {
            0
        };
        let job_key = self.key(&job.id);
        let mut conn = self.conn.clone();
        let code: i64 = scripts()
            .fail
            .key(self.key("active"))
            .key(self.key("failed"))
            .key(self.key("delayed"))
            .key(self.key("wait"))
            .key(self.key("events"))
            .key(&job_key)
            .key(format!("{job_key}:lock"))
            .key(self.key("marker"))
            .arg(&job.id)
            .arg(&job.token)
            .arg(reason)
            .arg(now_ms())
            .arg(if retry { "1" } else { "0" })
            .arg(delay)
            .invoke_async(&mut conn)
            .await?;
        match code {
            1 => Ok(FailOutcome::Retrying { delay_ms: delay }),
            0 => Ok(FailOutcome::Failed),
            _ => Err(QueueError::LockLost(job.id.clone())),
        }
    }

    pub async fn counts(&self) -> Result<QueueCounts, QueueError> {
        let mut conn = self.conn.clone();
        let (waiting, active, paused, delayed, prioritized, completed, failed): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
        ) = redis::pipe()
            .llen(self.key("wait"))
            .llen(self.key("active"))
            .llen(self.key("paused"))
            .zcard(self.key("delayed"))
            .zcard(self.key("prioritized"))
            .zcard(self.key("completed"))
            .zcard(self.key("failed"))
            .query_async(&mut conn)
            .await?;
        Ok(QueueCounts {
            waiting,
            active,
            delayed,
            paused,
            prioritized,
            completed,
            failed,
        })
    }

    pub async fn recover_stalled(&self) -> Result<usize, QueueError> {
        let mut conn = self.conn.clone();
        let n: usize = scripts()
            .recover_stalled
            .key(self.key("active"))
            .key(self.key("wait"))
            .key(self.key("events"))
            .key(self.key("marker"))
            .arg(&self.base)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// BullMQ job options as Node writes them: `attempts` (default 1) and
/// `backoff` as a number (fixed delay) or `{type, delay}`.
fn parse_opts(o: &Value) -> JobOptions {
    let attempts = o
        .get("attempts")
        .and_then(Value::as_u64)
        .map_or(1, |a| a.max(1) as u32);
    let backoff = match o.get("backoff") {
        Some(Value::Number(n)) => Backoff::Fixed {
            delay: n.as_u64().unwrap_or(0),
        },
        Some(b @ Value::Object(_)) => {
            let delay = b.get("delay").and_then(Value::as_u64).unwrap_or(0);
            match b.get("type").and_then(Value::as_str) {
                Some("exponential") => Backoff::Exponential { delay },
                _ => Backoff::Fixed { delay },
            }
        }
        _ => Backoff::Fixed { delay: 0 },
    };
    let job_id = o.get("jobId").and_then(Value::as_str).map(str::to_string);
    JobOptions {
        attempts,
        backoff,
        job_id,
    }
}
