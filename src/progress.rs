//! The live progress hub: the pipeline publishes each run's events under the
//! resource's `namespace/name`, and SSE clients subscribe. In-memory only
//! (per replica); a late subscriber gets the last event as a snapshot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use crate::pipeline::SyncEvent;

/// Events buffered per resource for slow subscribers before they lag.
const CHANNEL_CAPACITY: usize = 256;

/// Fan-out of run events to live subscribers. Cheap to clone.
#[derive(Clone, Default)]
pub struct ProgressHub {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

struct Channel {
    sender: broadcast::Sender<SyncEvent>,
    last: Option<SyncEvent>,
}

impl Channel {
    fn new() -> Self {
        Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            last: None,
        }
    }
}

impl ProgressHub {
    /// Publishes `event` for `key` (`namespace/name`). Never blocks.
    pub fn publish(&self, key: &str, event: SyncEvent) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = channels.entry(key.to_string()).or_insert_with(Channel::new);
        channel.last = Some(event.clone());
        // No receivers is fine: nobody is watching this resource.
        let _ = channel.sender.send(event);
    }

    /// The last event for `key` and a receiver for what comes next.
    pub fn subscribe(&self, key: &str) -> (Option<SyncEvent>, broadcast::Receiver<SyncEvent>) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = channels.entry(key.to_string()).or_insert_with(Channel::new);
        (channel.last.clone(), channel.sender.subscribe())
    }

    /// Forgets `key` (the resource was deleted).
    pub fn remove(&self, key: &str) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Stage;

    #[tokio::test]
    async fn a_subscriber_gets_the_last_event_then_live_ones() {
        let hub = ProgressHub::default();
        hub.publish(
            "ns/a",
            SyncEvent::StageStarted {
                stage: Stage::Prepare,
            },
        );
        let (last, mut live) = hub.subscribe("ns/a");
        assert_eq!(
            last,
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
            live.recv().await.unwrap(),
            SyncEvent::StageStarted { stage: Stage::Scan }
        );
        assert!(
            live.try_recv().is_err(),
            "events of another resource leaked"
        );
    }
}
