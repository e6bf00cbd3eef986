//! A Redis store: the same GCRA, done atomically in one round trip by a server-side Lua script,
//! on Redis' clock, so any number of replicas sharing one Redis admit exactly what one would.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::{Decision, Quota};
use super::store::{OnStoreError, StoreError};

/// GCRA in microseconds (Lua numbers are doubles: exact to 2^53, which microseconds since 1970
/// stay far below). Returns {allowed, remaining, reset_us, retry_after_us}. The key expires
/// when its bucket is full again, so Redis holds nothing for idle clients.
const SCRIPT: &str = r"
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local increment = emission * cost
local new_tat = tat + increment
local used = new_tat - now
if used <= capacity and increment <= capacity then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(used / 1000) + 1)
  return {1, math.floor((capacity - used) / emission), used, 0}
end
local retry = used - capacity
if increment > capacity then retry = capacity end
return {0, 0, tat - now, retry}
";

/// Takes back a charge (for a request a later limit denied), never below Redis' now.
const REFUND: &str = r"
local decrement = tonumber(ARGV[1]) * tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new_tat = math.max(tat - decrement, now)
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return 1
";

/// A Redis connection (multiplexed, reconnecting) with the GCRA script.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    script: redis::Script,
    refund: redis::Script,
    timeout: Duration,
    on_error: OnStoreError,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379`). One multiplexed connection serves every
    /// request; it reconnects by itself. The timeout per check is 50 ms, and a store that
    /// cannot answer fails closed (503), unless told otherwise.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        Ok(Self {
            connection,
            script: redis::Script::new(SCRIPT),
            refund: redis::Script::new(REFUND),
            timeout: Duration::from_millis(50),
            on_error: OnStoreError::FailClosed,
        })
    }

    /// The time a check may take (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis cannot answer (default: fail closed).
    pub fn on_error(mut self, on_error: OnStoreError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> OnStoreError {
        self.on_error
    }

    /// Checks and charges `cost` for `key` (`portcullis:{<limit>:<digest>}` as the layer names them), on Redis'
    /// clock, in one round trip.
    pub async fn check(&self, key: &str, quota: &Quota, cost: u32) -> Result<Decision, StoreError> {
        let emission_us = emission_us(quota);
        let capacity_us = emission_us.saturating_mul(u64::from(quota.burst_size()));
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(emission_us).arg(capacity_us).arg(cost);
        let reply: Result<(i64, i64, i64, i64), _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout)?;
        let (allowed, remaining, reset_us, retry_us) =
            reply.map_err(|e| StoreError::Redis(e.to_string()))?;
        let nanos = |us: i64| u64::try_from(us).unwrap_or(0).saturating_mul(1_000);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: nanos(reset_us),
            retry_after: nanos(retry_us),
            next: super::gcra::next_unit(quota, nanos(reset_us)),
        })
    }

    /// Takes back a charge of `cost` made by [`RedisStore::check`].
    pub async fn refund(&self, key: &str, quota: &Quota, cost: u32) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.refund.key(key);
        invocation.arg(emission_us(quota)).arg(cost);
        let reply: Result<i64, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout)?;
        reply
            .map(|_| ())
            .map_err(|e| StoreError::Redis(e.to_string()))
    }
}

/// The emission interval in whole microseconds (at least 1), as the scripts count.
fn emission_us(quota: &Quota) -> u64 {
    quota.emission_interval().div_ceil(1_000).max(1)
}
