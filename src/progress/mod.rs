//! The live progress hub: the pipeline publishes each run's events under the
//! resource's `namespace/name`, and SSE clients subscribe. In memory, per
//! replica; with a [`relay`] every event also reaches the other replicas
//! (Postgres `LISTEN/NOTIFY`), so any replica serves any resource's
//! stream. A late subscriber gets the last event as a snapshot.
//!
//! Bounded: at most [`MAX_CHANNELS`] channels and [`MAX_SUBSCRIBERS`]
//! subscribers. A subscriber's channel is created only for a key the caller
//! vouches exists (the HTTP layer checks the resource first), and a channel
//! that never carried an event is dropped with its last subscriber, so
//! subscriptions alone never leave state behind.
//!
//! Small per resource: a resource that nobody watches keeps only its last
//! event. The broadcast buffer (its [`CHANNEL_CAPACITY`] slots are
//! allocated up front, tens of KiB) exists only while someone subscribes,
//! so a replica with thousands of resources does not hold one per resource.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

pub mod relay;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::pipeline::SyncEvent;

/// Events buffered per resource for slow subscribers before they lag.
const CHANNEL_CAPACITY: usize = 256;
/// Channels held at most (one per resource that ran or is watched).
pub const MAX_CHANNELS: usize = 10_000;
/// Live subscribers at most, over all resources.
pub const MAX_SUBSCRIBERS: usize = 1_000;

/// Fan-out of run events to live subscribers. Cheap to clone.
#[derive(Clone)]
pub struct ProgressHub {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    subscribers: Arc<AtomicUsize>,
    max_channels: usize,
    max_subscribers: usize,
    /// Where published events go for the other replicas, if anywhere.
    relay: Option<mpsc::Sender<(String, SyncEvent)>>,
}

impl Default for ProgressHub {
    fn default() -> Self {
        Self::with_limits(MAX_CHANNELS, MAX_SUBSCRIBERS)
    }
}

#[derive(Default)]
struct Channel {
    /// Only while someone subscribes.
    sender: Option<broadcast::Sender<SyncEvent>>,
    last: Option<SyncEvent>,
}

impl Channel {
    fn receivers(&self) -> usize {
        self.sender.as_ref().map_or(0, |s| s.receiver_count())
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many live progress subscribers")]
    TooManySubscribers,
    #[error("too many progress channels")]
    TooManyChannels,
}

/// A subscription: the last event, and the stream of the next ones.
pub struct Subscription {
    pub last: Option<SyncEvent>,
    pub live: Live,
}

/// The live events of one resource. Dropping it releases its place in the
/// hub's bound (and the channel, when nothing was ever published on it).
pub struct Live {
    // Declared before the slot: dropped first, so the slot sees the
    // receiver gone.
    stream: BroadcastStream<SyncEvent>,
    _slot: Slot,
}

impl Stream for Live {
    type Item = Result<SyncEvent, BroadcastStreamRecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

struct Slot {
    hub: ProgressHub,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::SeqCst);
        let mut channels = self.hub.lock();
        // Fields drop in order: the subscription's receiver is gone already.
        if let Some(channel) = channels.get_mut(&self.key)
            && channel.receivers() == 0
        {
            channel.sender = None;
            if channel.last.is_none() {
                channels.remove(&self.key);
            }
        }
    }
}

impl ProgressHub {
    /// A hub with its own limits (tests).
    pub fn with_limits(max_channels: usize, max_subscribers: usize) -> Self {
        ProgressHub {
            channels: Arc::default(),
            subscribers: Arc::default(),
            max_channels: max_channels.max(1),
            max_subscribers: max_subscribers.max(1),
            relay: None,
        }
    }

    /// The same hub, also handing every published event to `relay` (never
    /// waiting: when the relay falls behind, events are dropped for the
    /// other replicas, not for this one).
    pub fn with_relay(mut self, relay: mpsc::Sender<(String, SyncEvent)>) -> Self {
        self.relay = Some(relay);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `event` for `key` (`namespace/name`). Never blocks. Runs
    /// come from resources that exist, so publishing is never refused; the
    /// channel goes with [`Self::remove`] when the resource is deleted.
    pub fn publish(&self, key: &str, event: SyncEvent) {
        if let Some(relay) = &self.relay
            && relay.try_send((key.to_string(), event.clone())).is_err()
        {
            tracing::debug!(
                resource = key,
                "progress relay behind: event not sent to other replicas"
            );
        }
        self.deliver_local(key, event);
    }

    /// Delivers `event` of `key` from another replica to this replica's
    /// subscribers. The caller must have checked that the resource exists;
    /// a new channel is made only within the bound on channels.
    pub fn deliver(&self, key: &str, event: SyncEvent) {
        {
            let channels = self.lock();
            if !channels.contains_key(key) && channels.len() >= self.max_channels {
                return;
            }
        }
        self.deliver_local(key, event);
    }

    fn deliver_local(&self, key: &str, event: SyncEvent) {
        let mut channels = self.lock();
        let channel = channels.entry(key.to_string()).or_default();
        // Nobody watching this resource: only the snapshot is kept.
        if let Some(sender) = &channel.sender {
            let _ = sender.send(event.clone());
        }
        channel.last = Some(event);
    }

    /// The last event for `key` and a receiver for what comes next. The
    /// caller must have checked that the resource `key` exists.
    pub fn subscribe(&self, key: &str) -> Result<Subscription, SubscribeError> {
        let taken = self.subscribers.fetch_add(1, Ordering::SeqCst);
        let slot = Slot {
            hub: self.clone(),
            key: key.to_string(),
        };
        if taken >= self.max_subscribers {
            return Err(SubscribeError::TooManySubscribers);
        }
        let mut channels = self.lock();
        if !channels.contains_key(key) && channels.len() >= self.max_channels {
            drop(channels);
            return Err(SubscribeError::TooManyChannels);
        }
        let channel = channels.entry(key.to_string()).or_default();
        let sender = channel
            .sender
            .get_or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0);
        let receiver = sender.subscribe();
        Ok(Subscription {
            last: channel.last.clone(),
            live: Live {
                stream: BroadcastStream::new(receiver),
                _slot: slot,
            },
        })
    }

    /// Forgets `key` (the resource was deleted).
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Channels held now.
    pub fn channel_count(&self) -> usize {
        self.lock().len()
    }

    /// Broadcast buffers held now (resources someone subscribes to).
    pub fn buffer_count(&self) -> usize {
        self.lock().values().filter(|c| c.sender.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Stage;
    use futures::{FutureExt, StreamExt};

    #[tokio::test]
    async fn a_subscriber_gets_the_last_event_then_live_ones() {
        let hub = ProgressHub::default();
        hub.publish(
            "ns/a",
            SyncEvent::StageStarted {
                stage: Stage::Prepare,
            },
        );
        let subscription = hub.subscribe("ns/a").unwrap();
        let mut live = subscription.live;
        assert_eq!(
            subscription.last,
            Some(SyncEvent::StageStarted {
                stage: Stage::Prepare
            })
        );
        hub.publish("ns/a", SyncEvent::StageStarted { stage: Stage::Scan });
        hub.publish(
            "ns/b",
            SyncEvent::StageStarted {
                stage: Stage::Import,
            },
        );
        assert_eq!(
            live.next().await.unwrap().unwrap(),
            SyncEvent::StageStarted { stage: Stage::Scan }
        );
        assert!(
            live.next().now_or_never().is_none(),
            "events of another resource leaked"
        );
    }

    #[test]
    fn a_subscription_to_a_quiet_key_leaves_no_channel_behind() {
        let hub = ProgressHub::default();
        let first = hub.subscribe("ns/quiet").unwrap();
        let second = hub.subscribe("ns/quiet").unwrap();
        drop(first);
        assert_eq!(hub.channel_count(), 1, "still watched");
        drop(second);
        assert_eq!(hub.channel_count(), 0);
        hub.publish("ns/ran", SyncEvent::StageStarted { stage: Stage::Scan });
        drop(hub.subscribe("ns/ran").unwrap());
        assert_eq!(hub.channel_count(), 1, "a channel with events stays");
    }

    #[tokio::test]
    async fn a_resource_nobody_watches_keeps_its_last_event_and_no_buffer() {
        let hub = ProgressHub::default();
        hub.publish("ns/a", SyncEvent::StageStarted { stage: Stage::Scan });
        assert_eq!((hub.channel_count(), hub.buffer_count()), (1, 0));
        let subscription = hub.subscribe("ns/a").unwrap();
        assert_eq!(hub.buffer_count(), 1);
        let mut live = subscription.live;
        hub.publish(
            "ns/a",
            SyncEvent::StageStarted {
                stage: Stage::Import,
            },
        );
        assert_eq!(
            live.next().await.unwrap().unwrap(),
            SyncEvent::StageStarted {
                stage: Stage::Import
            }
        );
        drop(live);
        assert_eq!((hub.channel_count(), hub.buffer_count()), (1, 0));
        assert_eq!(
            hub.subscribe("ns/a").unwrap().last,
            Some(SyncEvent::StageStarted {
                stage: Stage::Import
            })
        );
    }

    #[test]
    fn subscribers_and_channels_are_bounded() {
        let hub = ProgressHub::with_limits(2, 3);
        let a = hub.subscribe("ns/a").unwrap();
        let _b = hub.subscribe("ns/b").unwrap();
        assert_eq!(
            hub.subscribe("ns/c").err(),
            Some(SubscribeError::TooManyChannels)
        );
        let _a2 = hub.subscribe("ns/a").unwrap();
        assert_eq!(
            hub.subscribe("ns/a").err(),
            Some(SubscribeError::TooManySubscribers)
        );
        drop(a);
        assert!(hub.subscribe("ns/a").is_ok(), "a freed slot is reused");
    }
}
