//! The receiving side of replication: decoding frames from the mesh, merging batches (with the
//! sender's delivery promise), acknowledging them, answering digest questions and applying
//! invalidations. Replies go back on the address of our own link to the sender, or wait for
//! that link (`repl::parked`).
//!
//! Invariant: a batch is acknowledged only after every entry in it was merged (or refused as a
//! stale duplicate within the sender's promise), so an ack means "held here".

use super::*;

impl Replicator {
    /// Handles one replication frame from the mesh.
    pub async fn on_frame(&self, frame: &[u8]) {
        let (msg, promise, invalidations) = match wire::decode_with(frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a bad replication frame");
                return;
            }
        };
        let from = match &msg {
            ReplMsg::Batch { from, .. }
            | ReplMsg::Ack { from, .. }
            | ReplMsg::Digests { from, .. }
            | ReplMsg::DigestDiff { from, .. } => *from,
        };
        // Silence longer than a keep-alive period then a frame: the peer is back (a partition
        // healed), which its link may want to know (see `pacing`).
        let was_silent = {
            let mut heard = self.heard.lock();
            let h = heard.entry(from).or_insert(Inbound {
                last: std::time::Instant::now(),
                batches: 0,
                bytes: 0,
                skew_alarms: 0,
                last_skew: None,
            });
            let was_silent = h.last.elapsed() > Duration::from_secs(1);
            h.last = std::time::Instant::now();
            if matches!(msg, ReplMsg::Batch { .. }) {
                h.batches += 1;
                h.bytes += frame.len() as u64;
            }
            was_silent
        };
        if was_silent {
            if let Some(link) = self.links.read().get(&from) {
                link.heard_from_peer();
            }
        }
        match msg {
            ReplMsg::Batch {
                from,
                session,
                fresh,
                batch,
                upto,
                entries,
            } => {
                // 3. Merge, then acknowledge.
                let ks = self.ks();
                self.batches_received.fetch_add(1, Relaxed);
                self.entries_received
                    .fetch_add(entries.len() as u64, Relaxed);
                // The promise speaks for this batch's entries only within a session we know
                // (or the one this batch starts): it was computed by that session's sender.
                let known = fresh
                    || self
                        .inbound
                        .lock()
                        .get(&from)
                        .is_some_and(|s| s.0 == session);
                let delivered_below = if known { promise } else { 0 };
                let merged: Vec<_> = entries
                    .iter()
                    .filter(|e| !self.invalidated(e))
                    .map(|e| (&e.key, &e.entry))
                    .collect();
                let alarms = ks.merge_batch(Origin::Peer(from), &merged, delivered_below);
                if alarms > 0 {
                    if let Some(h) = self.heard.lock().get_mut(&from) {
                        h.skew_alarms += alarms;
                        h.last_skew = Some(std::time::Instant::now());
                    }
                }
                self.apply_invalidations(&invalidations);
                // Merges are never refused (that would lose a peer's writes), but they count
                // against maxmemory like local writes: evict for them now, under the policy.
                // Under `noeviction` the next local write gets the OOM error instead.
                let _ = ks.ensure_memory();
                let need_resync = {
                    let mut inbound = self.inbound.lock();
                    let s = inbound.entry(from).or_insert((0, 0));
                    if fresh {
                        *s = (session, 0);
                    }
                    if s.0 == session && upto > 0 {
                        s.1 = s.1.max(upto);
                    }
                    s.0 != session
                };
                if !need_resync {
                    self.note_promise(from, session, batch, promise);
                }
                let ack = ReplMsg::Ack {
                    from: self.me,
                    session,
                    batch,
                    upto,
                    need_resync,
                };
                match wire::encode(ack, 0).map(|frame| self.addressed(from, frame)) {
                    Ok(Some((addr, frame))) => {
                        // Sent from its own task: this runs on the node's inbound loop, which
                        // also carries membership datagrams, and a send to a peer that just
                        // became unreachable waits for a dial (up to the mesh's handshake
                        // timeout). Awaited here, a partition of another region stalled the
                        // loop for that long per queued batch, the region's own membership
                        // datagrams were dropped meanwhile, and its nodes judged each other
                        // down (found by the compose demo, regions/demo.sh).
                        let transport = self.transport.clone();
                        let mut acks = self.acks.lock();
                        while acks.try_join_next().is_some() {}
                        acks.spawn(async move {
                            if let Err(e) = transport.send(addr, frame).await {
                                tracing::debug!(task = "repl-ack", error = %e, "cannot send a replication ack");
                            }
                        });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "cannot encode an ack"),
                }
            }
            ReplMsg::Ack {
                from,
                session,
                batch,
                upto: _,
                need_resync,
            } => {
                let link = self.links.read().get(&from).cloned();
                match link {
                    Some(link) if need_resync => link.lost_session(session),
                    Some(link) => link.on_ack(session, batch),
                    None => {}
                }
                // Links to `from` retired while their batches were in flight (`Link::retire`;
                // a role switch retires a link and makes one of another kind to the same peer)
                // drain until what they sent is acknowledged. A peer merges a batch before it
                // looks at the session, so for them `need_resync` (the replacing link began a
                // session) acknowledges too. Every link ignores acks of other sessions.
                for l in self.retired_to(from) {
                    l.on_ack(session, batch);
                }
            }
            ReplMsg::Digests {
                from,
                session,
                ask,
                ranges,
            } => {
                let differ = repair::compare(self.ks(), &ranges);
                let reply = ReplMsg::DigestDiff {
                    from: self.me,
                    session,
                    ask,
                    differ,
                };
                self.reply(from, reply).await;
            }
            ReplMsg::DigestDiff {
                from,
                session,
                ask,
                differ,
            } => {
                if let Some(link) = self.links.read().get(&from).cloned() {
                    link.on_digest_diff(session, ask, &differ);
                }
            }
        }
    }

    /// Sends a reply (not a batch) to `to` on the address of our link to it; parks it until
    /// that link is made if there is none yet (`repl::parked`).
    async fn reply(&self, to: u64, msg: ReplMsg) {
        let frame = match wire::encode(msg, 0) {
            Ok(frame) => frame,
            Err(e) => return tracing::error!(error = %e, "cannot encode a replication reply"),
        };
        let Some((addr, frame)) = self.addressed(to, frame) else {
            return;
        };
        if let Err(e) = self.transport.send(addr, frame).await {
            tracing::debug!(error = %e, "cannot send a replication reply");
        }
    }

    /// The address of our link to `to`, with `frame`; or `None` once the frame is parked for
    /// the link that is not made yet. Parks under the links lock, which `set_links` holds
    /// while it takes a new link's parked frames, so no frame is parked after that take.
    fn addressed(&self, to: u64, frame: bytes::Bytes) -> Option<(SocketAddr, bytes::Bytes)> {
        let links = self.links.read();
        match links.get(&to) {
            Some(l) => Some((*l.addr.lock(), frame)),
            None => {
                self.parked.park(to, frame);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;

    /// A transport that keeps what it was asked to send.
    #[derive(Default)]
    struct Capture(Mutex<Vec<(SocketAddr, bytes::Bytes)>>);

    impl Transport for Capture {
        fn send(
            &self,
            to: SocketAddr,
            frame: bytes::Bytes,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
            self.0.lock().push((to, frame));
            Box::pin(async { Ok(()) })
        }
    }

    impl Capture {
        /// `(session, batch)` of every ack sent to `to`.
        fn acks_to(&self, to: SocketAddr) -> Vec<(u64, u64)> {
            let sent = self.0.lock();
            (sent.iter().filter(|(a, _)| *a == to))
                .filter_map(|(_, f)| match wire::decode(f) {
                    Ok((ReplMsg::Ack { session, batch, .. }, _)) => Some((session, batch)),
                    _ => None,
                })
                .collect()
        }
    }

    /// A peer's link can send its first batch before membership made our link back to it; the
    /// ack waits for that link instead of being dropped (the peer would wait for its retry).
    #[tokio::test]
    async fn a_batch_from_a_peer_we_have_no_link_to_yet_is_acked_once_the_link_is_made() {
        let capture = Arc::new(Capture::default());
        let r = Replicator::new(1, capture.clone());
        let ks = Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None);
        r.attach(Arc::new(ks));
        let batch = ReplMsg::Batch {
            from: 2,
            session: 77,
            fresh: true,
            batch: 1,
            upto: 0,
            entries: Vec::new(),
        };
        r.on_frame(&wire::encode(batch, 0).expect("encode")).await;
        assert!(capture.0.lock().is_empty(), "nowhere to send the ack yet");

        let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        r.set_links(vec![LinkSpec {
            peer: 2,
            kind: LinkKind::Replica,
            group: String::new(),
            addr,
            slots: SlotSet::default(),
        }]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while capture.acks_to(addr).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(capture.acks_to(addr), vec![(77, 1)]);
        r.shutdown().await;
    }
}
