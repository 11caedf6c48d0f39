//! Progress across replicas: the replica that runs a sync sends each event
//! with Postgres `NOTIFY` on [`CHANNEL`], and every replica `LISTEN`s and
//! hands what others sent to its own hub, so a progress stream can be
//! served by any replica (behind a Service, the caller reaches any of them).
//! Postgres because every replica already has it; no new component, no
//! replica-to-replica addressing.
//!
//! Bounded: a payload is at most [`MAX_PAYLOAD`] bytes (Postgres refuses
//! more than 8000), long free text in an event (a trigger, a failure
//! message) is cut to [`MAX_TEXT`] characters to fit, and an event that
//! still does not fit is not relayed. Events wait in a queue of
//! [`QUEUE`] for the sender, which never blocks the run; bursts of
//! progress counts are coalesced to the latest per resource. Incoming
//! payloads are checked like any input: size, shape, a resource name that
//! exists here. I/O against Postgres.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::mpsc;

use super::ProgressHub;
use crate::pipeline::SyncEvent;

/// The `LISTEN/NOTIFY` channel of progress events.
pub const CHANNEL: &str = "projectsync_progress";
/// Largest payload sent or accepted, in bytes.
pub const MAX_PAYLOAD: usize = 7_900;
/// Longest free text kept in a relayed event, in characters.
pub const MAX_TEXT: usize = 512;
/// Events waiting for the sender at most.
pub const QUEUE: usize = 1_024;
/// Events sent in one statement at most.
const BATCH: usize = 64;

/// An event of a resource (`namespace/name`) on its way to the relay.
pub type Outgoing = (String, SyncEvent);

/// One relayed event on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The sending process (its own events are not delivered twice).
    o: String,
    /// A sequence number: Postgres folds identical payloads of one
    /// transaction into one.
    s: u64,
    /// The resource, `namespace/name`.
    k: String,
    e: SyncEvent,
}

/// Whether this replica receives the other replicas' events right now.
#[derive(Clone, Default)]
pub struct RelayStatus(Arc<AtomicBool>);

impl RelayStatus {
    pub fn is_listening(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, listening: bool) {
        self.0.store(listening, Ordering::SeqCst);
    }
}

/// The relay of one process: its origin id and its listening state.
#[derive(Clone)]
pub struct Relay {
    origin: String,
    status: RelayStatus,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            origin: uuid::Uuid::new_v4().simple().to_string(),
            status: RelayStatus::default(),
        }
    }
}

impl Relay {
    /// The queue a [`ProgressHub::with_relay`] hands events to.
    pub fn queue() -> (mpsc::Sender<Outgoing>, mpsc::Receiver<Outgoing>) {
        mpsc::channel(QUEUE)
    }

    pub fn status(&self) -> RelayStatus {
        self.status.clone()
    }

    /// Sends queued events until the queue closes.
    pub async fn send(self, pool: PgPool, mut queue: mpsc::Receiver<Outgoing>) {
        let mut seq = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while queue.recv_many(&mut batch, BATCH).await > 0 {
            let payloads: Vec<String> = coalesce(std::mem::take(&mut batch))
                .into_iter()
                .filter_map(|(key, event)| {
                    seq = seq.wrapping_add(1);
                    encode(&self.origin, seq, &key, &event)
                })
                .collect();
            let events = payloads.len();
            if events == 0 {
                continue;
            }
            // `query!` cannot type pg_notify's `void` result.
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(payloads)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, events, "could not relay progress to the other replicas");
            }
        }
    }

    /// Listens for the other replicas' events and delivers those of
    /// resources that `exists` (namespace, name) to `hub`, reconnecting
    /// with a bounded backoff.
    pub async fn listen(
        self,
        pool: PgPool,
        hub: ProgressHub,
        exists: impl Fn(&str, &str) -> bool + Send + 'static,
    ) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match subscribe(&pool).await {
                Ok(mut listener) => {
                    self.status.set(true);
                    backoff = Duration::from_secs(1);
                    loop {
                        match listener.recv().await {
                            Ok(notification) => {
                                if let Some((key, event)) =
                                    decode(notification.payload(), &self.origin)
                                    && let Some((namespace, name)) = key.split_once('/')
                                    && exists(namespace, name)
                                {
                                    hub.deliver(&key, event);
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "progress relay: lost the Postgres listener");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "progress relay: cannot listen on Postgres");
                }
            }
            self.status.set(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Drops progress counts that a later count of the same resource in the
/// batch replaces; every other event is kept, in order.
fn coalesce(batch: Vec<(String, SyncEvent)>) -> Vec<(String, SyncEvent)> {
    let mut seen = HashSet::new();
    let mut kept: Vec<(String, SyncEvent)> = batch
        .into_iter()
        .rev()
        .filter(|(key, event)| {
            !matches!(event, SyncEvent::Progress { .. }) || seen.insert(key.clone())
        })
        .collect();
    kept.reverse();
    kept
}

fn cut(text: &mut String) {
    if let Some((at, _)) = text.char_indices().nth(MAX_TEXT) {
        text.truncate(at);
    }
}

/// The event with its free text cut to [`MAX_TEXT`].
fn shrink(mut event: SyncEvent) -> SyncEvent {
    match &mut event {
        SyncEvent::Started { trigger, .. } => cut(trigger),
        SyncEvent::Completed(summary) => cut(&mut summary.trigger),
        SyncEvent::Failed {
            reason, message, ..
        } => {
            cut(reason);
            cut(message);
        }
        _ => {}
    }
    event
}

/// The payload for `event`, or `None` when it cannot fit.
fn encode(origin: &str, seq: u64, key: &str, event: &SyncEvent) -> Option<String> {
    let wire = |e: SyncEvent| {
        serde_json::to_string(&Wire {
            o: origin.to_string(),
            s: seq,
            k: key.to_string(),
            e,
        })
        .ok()
    };
    let payload = wire(event.clone())?;
    if payload.len() <= MAX_PAYLOAD {
        return Some(payload);
    }
    let payload = wire(shrink(event.clone()))?;
    if payload.len() <= MAX_PAYLOAD {
        Some(payload)
    } else {
        tracing::debug!(resource = key, "progress event too large to relay");
        None
    }
}

/// Whether `key` is a `namespace/name` Kubernetes could have made.
fn plausible_key(key: &str) -> bool {
    let Some((namespace, name)) = key.split_once('/') else {
        return false;
    };
    // A namespace is a DNS label, a name a DNS subdomain: lowercase
    // alphanumerics, `-` (and `.` in names), alphanumeric at both ends.
    let dns = |s: &str, max: usize, dots: bool| {
        let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        s.len() <= max
            && edge(s.bytes().next())
            && edge(s.bytes().last())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
            })
    };
    dns(namespace, 63, false) && dns(name, 253, true)
}

/// The event another process sent, or `None` for our own, an oversized or
/// malformed payload, or a key no resource could have.
fn decode(payload: &str, origin: &str) -> Option<(String, SyncEvent)> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let wire: Wire = serde_json::from_str(payload).ok()?;
    (wire.o != origin && plausible_key(&wire.k)).then_some((wire.k, wire.e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pipeline::RunSummary, run::Stage};

    fn progress(done: u64) -> SyncEvent {
        SyncEvent::Progress {
            stage: Stage::Import,
            files_done: done,
            files_total: 10,
        }
    }

    #[test]
    fn an_event_round_trips_between_two_processes_but_not_back_to_its_sender() {
        let event = SyncEvent::Completed(RunSummary {
            sync_id: "s".into(),
            commit: "c".repeat(40),
            trigger: "interval".into(),
            ..RunSummary::default()
        });
        let payload = encode("me", 1, "ns/app", &event).unwrap();
        assert_eq!(decode(&payload, "other"), Some(("ns/app".into(), event)));
        assert_eq!(decode(&payload, "me"), None);
    }

    #[test]
    fn long_free_text_is_cut_to_fit_and_hostile_payloads_are_refused() {
        let event = SyncEvent::Failed {
            sync_id: None,
            stage: Stage::Import,
            reason: "StoreFailed".into(),
            message: "é".repeat(20_000),
        };
        let payload = encode("me", 1, "ns/app", &event).expect("cut to fit");
        assert!(payload.len() <= MAX_PAYLOAD);
        let Some((_, SyncEvent::Failed { message, .. })) = decode(&payload, "other") else {
            panic!("a failure")
        };
        assert_eq!(message.chars().count(), MAX_TEXT);

        assert_eq!(decode("not json", "x"), None);
        assert_eq!(decode(&"x".repeat(MAX_PAYLOAD + 1), "x"), None);
        for key in [
            "../etc",
            "ns/..",
            "ns",
            "NS/App",
            "ns/",
            "ns/a/b",
            &format!("ns/{}", "a".repeat(300)),
        ] {
            let payload = serde_json::json!({"o": "a", "s": 1, "k": key, "e": {"event": "unchanged", "commit": "c"}});
            assert_eq!(decode(&payload.to_string(), "b"), None, "{key}");
        }
    }

    #[test]
    fn bursts_of_progress_keep_the_latest_count_per_resource_and_every_other_event() {
        let batch = vec![
            ("ns/a".to_string(), progress(1)),
            ("ns/b".to_string(), progress(1)),
            (
                "ns/a".to_string(),
                SyncEvent::StageStarted {
                    stage: Stage::Finalize,
                },
            ),
            ("ns/a".to_string(), progress(2)),
            ("ns/a".to_string(), progress(3)),
        ];
        let kept = coalesce(batch);
        assert_eq!(
            kept,
            vec![
                ("ns/b".to_string(), progress(1)),
                (
                    "ns/a".to_string(),
                    SyncEvent::StageStarted {
                        stage: Stage::Finalize
                    }
                ),
                ("ns/a".to_string(), progress(3)),
            ]
        );
    }
}
