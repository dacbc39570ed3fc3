//! Publish/subscribe: who listens to which channel or pattern, and delivery.
//!
//! Subscribers are kept as connection [`Handle`]s, so a message published on one I/O thread
//! reaches a subscriber on another through that connection's mailbox. A subscriber whose
//! handle refuses a message (its output is over the server's output limit, or it is gone)
//! is dropped from the registry and its connection closed: a client that stops reading
//! never makes the server hold more than the output limit for it.
//!
//! A subscriber's registrations and the replies that confirm them are sent under the
//! registry's write lock, and messages under its read lock, so a confirmation always
//! reaches the client before the first message it announces.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use super::glob;
use super::protocol::reply;
use crate::service::{Handle, HandleError};

#[derive(Clone)]
struct Sub {
    client: u64,
    handle: Handle,
}

#[derive(Default)]
struct Registry {
    channels: HashMap<Box<[u8]>, Vec<Sub>>,
    patterns: HashMap<Box<[u8]>, Vec<Sub>>,
}

impl Registry {
    fn add(map: &mut HashMap<Box<[u8]>, Vec<Sub>>, name: &[u8], sub: &Sub) {
        let subs = map.entry(name.into()).or_default();
        if !subs.iter().any(|s| s.client == sub.client) {
            subs.push(sub.clone());
        }
    }

    fn remove(map: &mut HashMap<Box<[u8]>, Vec<Sub>>, name: &[u8], client: u64) {
        if let Some(subs) = map.get_mut(name) {
            subs.retain(|s| s.client != client);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    fn drop_clients(&mut self, clients: &[u64]) {
        for map in [&mut self.channels, &mut self.patterns] {
            map.retain(|_, subs| {
                subs.retain(|s| !clients.contains(&s.client));
                !subs.is_empty()
            });
        }
    }
}

/// The channels and patterns one connection wants, and those registered for it.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Channels asked for.
    pub channels: BTreeSet<Box<[u8]>>,
    /// Patterns asked for.
    pub patterns: BTreeSet<Box<[u8]>>,
    registered_channels: BTreeSet<Box<[u8]>>,
    registered_patterns: BTreeSet<Box<[u8]>>,
}

impl Subscriptions {
    /// Channels plus patterns asked for (the count subscribe replies carry).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// The registry of subscribers.
#[derive(Default)]
pub struct PubSub {
    reg: RwLock<Registry>,
}

impl PubSub {
    /// Make the registry match what `subs` asks for, then queue `output` on `handle`, both
    /// under the write lock.
    ///
    /// # Errors
    /// The handle refused the output: the caller closes the connection.
    pub fn sync(
        &self,
        client: u64,
        handle: &Handle,
        subs: &mut Subscriptions,
        output: &[u8],
    ) -> Result<(), HandleError> {
        let mut reg = self.reg.write().unwrap_or_else(PoisonError::into_inner);
        let sub = Sub {
            client,
            handle: handle.clone(),
        };
        for c in subs.registered_channels.difference(&subs.channels) {
            Registry::remove(&mut reg.channels, c, client);
        }
        for c in subs.channels.difference(&subs.registered_channels) {
            Registry::add(&mut reg.channels, c, &sub);
        }
        for p in subs.registered_patterns.difference(&subs.patterns) {
            Registry::remove(&mut reg.patterns, p, client);
        }
        for p in subs.patterns.difference(&subs.registered_patterns) {
            Registry::add(&mut reg.patterns, p, &sub);
        }
        subs.registered_channels.clone_from(&subs.channels);
        subs.registered_patterns.clone_from(&subs.patterns);
        if output.is_empty() {
            Ok(())
        } else {
            handle.send(output)
        }
    }

    /// Forget a connection that closed.
    pub fn remove(&self, client: u64, subs: &Subscriptions) {
        if subs.registered_channels.is_empty() && subs.registered_patterns.is_empty() {
            return;
        }
        let mut reg = self.reg.write().unwrap_or_else(PoisonError::into_inner);
        for c in &subs.registered_channels {
            Registry::remove(&mut reg.channels, c, client);
        }
        for p in &subs.registered_patterns {
            Registry::remove(&mut reg.patterns, p, client);
        }
    }

    /// Deliver `message` to the subscribers of `channel` and of the patterns it matches;
    /// returns how many took it.
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let mut delivered = 0;
        let mut dead: Vec<(u64, Handle, HandleError)> = Vec::new();
        {
            let reg = self.reg.read().unwrap_or_else(PoisonError::into_inner);
            let mut frame = Vec::new();
            let mut send = |subs: &[Sub], frame: &[u8]| {
                for s in subs {
                    match s.handle.send(frame) {
                        Ok(()) => delivered += 1,
                        Err(e) => dead.push((s.client, s.handle.clone(), e)),
                    }
                }
            };
            if let Some(subs) = reg.channels.get(channel) {
                reply::array(&mut frame, 3);
                reply::bulk(&mut frame, b"message");
                reply::bulk(&mut frame, channel);
                reply::bulk(&mut frame, message);
                send(subs, &frame);
            }
            for (pattern, subs) in &reg.patterns {
                if glob::matches(pattern, channel) {
                    frame.clear();
                    reply::array(&mut frame, 4);
                    reply::bulk(&mut frame, b"pmessage");
                    reply::bulk(&mut frame, pattern);
                    reply::bulk(&mut frame, channel);
                    reply::bulk(&mut frame, message);
                    send(subs, &frame);
                }
            }
        }
        if !dead.is_empty() {
            let clients: Vec<u64> = dead.iter().map(|d| d.0).collect();
            self.reg
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .drop_clients(&clients);
            for (_, handle, err) in dead {
                if err == HandleError::Full {
                    // It missed a message: it must not go on as if it had not.
                    let _ = handle.close();
                }
            }
        }
        delivered
    }

    /// Channels with at least one subscriber, matching `pattern` if given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Box<[u8]>> {
        let reg = self.reg.read().unwrap_or_else(PoisonError::into_inner);
        reg.channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob::matches(p, c)))
            .cloned()
            .collect()
    }

    /// Subscribers of `channel`.
    pub fn numsub(&self, channel: &[u8]) -> usize {
        let reg = self.reg.read().unwrap_or_else(PoisonError::into_inner);
        reg.channels.get(channel).map_or(0, Vec::len)
    }

    /// Patterns with at least one subscriber.
    pub fn numpat(&self) -> usize {
        let reg = self.reg.read().unwrap_or_else(PoisonError::into_inner);
        reg.patterns.len()
    }
}
