//! Receiving: a multishot receive per connection on the provided-buffer ring, paused and
//! resumed with the output limit and the worker's congestion; receives starved by an empty
//! buffer ring are re-armed a ring's worth at a time.

use super::*;

impl UringDriver {
    /// Arm or cancel the connection's receive to match what it wants now.
    pub(super) fn update_recv(&mut self, slot: u32) {
        let stopping = self.stopping_since.is_some();
        let bgid = self.bufs.bgid();
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() {
            // The close-time cancel covers the receive.
            return;
        }
        let ud = user_data(Op::Recv, c.id.generation(), slot);
        if c.wants_recv(stopping) {
            // Paused for output, an armed receive is cancelled only when input arrives (then
            // held: see `on_recv`), and none is armed.
            if !c.recv_armed && !c.out_paused {
                c.recv_armed = true;
                c.recv_cancel = false;
                let (fd, fixed) = c.file();
                let entry = opcode::RecvMulti::new(fd, bgid)
                    .build()
                    .flags(fixed)
                    .user_data(ud);
                self.push(entry);
            }
        } else if c.recv_armed && !c.recv_cancel {
            c.recv_cancel = true;
            let entry = opcode::AsyncCancel::new(ud).build().user_data(user_data(
                Op::CancelRecv,
                c.id.generation(),
                slot,
            ));
            self.push(entry);
        }
    }

    pub(super) fn on_recv<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        flags: u32,
        dispatch: &mut D,
    ) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let scripted = choke::recv(&self.cfg);
        let Some(c) = live(&mut self.slots, slot, generation) else {
            // Cannot happen (a slot is reused only after its last completion); keep the
            // buffer anyway.
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        // After the service asked to close (and while lingering) input is read and dropped.
        let deliver = c.dying.is_none() && !c.closing;
        let mut abort = None;
        // The lingering connection saw the peer's EOF: close it now.
        let mut linger_done = false;
        if res > 0 {
            let n = res as usize;
            match bid.and_then(|b| self.bufs.get(b, n)) {
                Some(bytes) => {
                    c.last_read.reset(self.now);
                    if deliver {
                        for piece in bytes.chunks(scripted.piece.unwrap_or(n)) {
                            if c.stalled || c.out_paused || dispatch.congested(c.id) {
                                // The worker is behind, or the output over its limit: stop
                                // reading (the receive is cancelled once this completion is
                                // handled) and hold what still arrives until both are past,
                                // in order, so the hand-off and the output stay bounded as
                                // with the readiness driver.
                                if !c.stalled && !c.out_paused {
                                    // A pause for output was counted when it began.
                                    Stats::add(&self.stats.read_pauses, 1);
                                }
                                hold(c, &mut self.stalled, slot)
                                    .bytes
                                    .extend_from_slice(piece);
                            } else {
                                // `bytes_in` counts what the service is handed (see
                                // `Stats`): held bytes when they are handed over, input read
                                // while closing or lingering never.
                                Stats::add(&self.stats.bytes_in, piece.len() as u64);
                                dispatch.data(c.id, piece);
                            }
                        }
                    }
                }
                None => {
                    abort = Some((Disposition::Fatal, io::Error::other("bad buffer id")));
                }
            }
        } else if res == 0 {
            // A scripted error stands in for an EOF, which stays in the socket: the
            // re-armed receive reports it again.
            let replaced = scripted.recv.is_some() || scripted.ring.is_some();
            if !c.read_eof && !replaced && c.dying.is_none() {
                // After the service asked to close it is not told, but the EOF is kept:
                // with nothing left unread, the close needs no linger.
                c.read_eof = true;
                if c.linger_until.is_some() {
                    linger_done = true;
                } else if deliver {
                    match c.held.as_deref_mut() {
                        Some(h) if h.pending() => h.eof = true,
                        // Paused for output, the EOF waits like input would, as it does in
                        // the socket for the readiness driver, until the output drained.
                        _ if c.out_paused => hold(c, &mut self.stalled, slot).eof = true,
                        _ => dispatch.eof(c.id),
                    }
                }
            }
        } else {
            let (e, key) = (from_completion(res), (slot, generation));
            abort = recv_failed(
                c,
                Site::BufferRing,
                e,
                !more,
                &self.stats,
                &mut self.starved,
                key,
            );
        }
        // Scripted errors: as if the receive had ended with them after this completion.
        // Its multishot may still be running: a starved connection does not want it, so it
        // is cancelled and re-armed from the starved queue, as after a real ENOBUFS;
        // after EINTR or EAGAIN it just goes on.
        for (site, e) in [
            (Site::Recv, scripted.recv),
            (Site::BufferRing, scripted.ring),
        ] {
            let Some(e) = e else {
                continue;
            };
            if abort.is_none() {
                let key = (slot, generation);
                abort = recv_failed(c, site, e, true, &self.stats, &mut self.starved, key);
            }
        }
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        if !more {
            c.recv_armed = false;
            c.recv_cancel = false;
        }
        if let Some((d, e)) = abort {
            if c.linger_until.is_some() {
                // Lingering: a failed receive ends the linger like an EOF (the output was
                // written already); as with the readiness driver it is not counted.
                self.begin_close(slot, CloseWhy::Done, dispatch);
                return;
            }
            self.stats.error(d);
            if d == Disposition::Fatal {
                log_fatal(&mut self.fatal_log, "recv", c.id, &e);
            }
            self.begin_close(slot, CloseWhy::Abort, dispatch);
            return;
        }
        if linger_done {
            self.begin_close(slot, CloseWhy::Done, dispatch);
        } else if c.dying.is_some() {
            self.maybe_finalize(slot, dispatch);
        } else {
            self.update_recv(slot);
        }
    }

    pub(super) fn on_recv_cancel(&mut self, slot: u32, generation: u32, res: i32) {
        if res >= 0 {
            return;
        }
        let e = from_completion(res);
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        // Nothing was cancelled (Canceled: the receive had just ended, or was running):
        // allow the next pass to try again if the receive is still armed.
        c.recv_cancel = false;
        let d = classify(Site::Cancel, &e);
        if d != Disposition::Canceled {
            self.stats.error(d);
            log_fatal(&mut self.fatal_log, "receive cancel", c.id, &e);
        }
    }

    pub(super) fn resume_stalled<D: Dispatch>(&mut self, dispatch: &mut D) {
        let now = self.now;
        let mut i = 0;
        while i < self.stalled.len() {
            let slot = self.stalled[i];
            let resume = match self.slots[slot as usize].conn.as_mut() {
                // Once closing (the service asked to, or shutdown), held input is dropped like
                // input that arrives then: an answer to it could no longer be sent.
                Some(c) if c.stalled && c.dying.is_none() && !c.closing => {
                    // Hand over what was held, a chunk at a time, while the worker keeps up
                    // and the output is under its limit.
                    if let Some(h) = c.held.as_deref_mut() {
                        while h.pending() && !c.out_paused && !dispatch.congested(c.id) {
                            let end = h.bytes.len().min(h.pos + HELD_CHUNK);
                            Stats::add(&self.stats.bytes_in, (end - h.pos) as u64);
                            dispatch.data(c.id, &h.bytes[h.pos..end]);
                            h.pos = end;
                            self.handed_late = true;
                        }
                    }
                    let pending = c.held.as_ref().is_some_and(|h| h.pending());
                    if pending || c.out_paused || dispatch.congested(c.id) {
                        false
                    } else {
                        if c.held.take().is_some_and(|h| h.eof) {
                            dispatch.eof(c.id);
                            self.handed_late = true;
                        }
                        c.stalled = false;
                        // The pause was the worker's doing, not the peer's: the idle clock
                        // starts again from here.
                        c.last_read.reset(now);
                        true
                    }
                }
                _ => true,
            };
            if resume {
                self.stalled.swap_remove(i);
                self.mark_dirty(slot);
            } else {
                i += 1;
            }
        }
    }

    /// Give receives that found the buffer ring empty another go, oldest first, as many as
    /// there are buffers (each has data waiting, so each takes at least one).
    pub(super) fn rearm_starved(&mut self) {
        let mut budget = usize::from(self.cfg.ring_buffers).max(1);
        while budget > 0 {
            let Some((slot, generation)) = self.starved.pop_front() else {
                return;
            };
            if let Some(c) = live(&mut self.slots, slot, generation) {
                if c.starved {
                    c.starved = false;
                    // One paused for output is not re-armed until it drains: it takes no
                    // buffer now.
                    if !c.out_paused {
                        budget -= 1;
                    }
                    self.mark_dirty(slot);
                }
            }
        }
    }
}

/// Stop handing `c`'s input over (it is held from here on, and the receive cancelled)
/// until `resume_stalled` finds the pause over; the held input.
fn hold<'c>(c: &'c mut Conn, stalled: &mut Vec<u32>, slot: u32) -> &'c mut Held {
    if !c.stalled {
        c.stalled = true;
        stalled.push(slot);
    }
    c.held.get_or_insert_with(Box::default)
}

/// A receive of `c` failed with `e` at `site`. `ended`: the receive is over because of it,
/// or is to be ended (only then does an empty buffer ring starve it). Returns the reason to
/// close the connection, if it must close.
pub(super) fn recv_failed(
    c: &mut Conn,
    site: Site,
    e: io::Error,
    ended: bool,
    stats: &Stats,
    starved: &mut VecDeque<(u32, u32)>,
    key: (u32, u32),
) -> Option<(Disposition, io::Error)> {
    match classify(site, &e) {
        // The buffer ring ran dry: the data waits in the socket. Re-armed from the starved
        // queue once this turn's buffers are back (a receive still running is cancelled
        // first: a starved connection does not want one).
        Disposition::Exhausted => {
            Stats::add(&stats.enobufs, 1);
            if ended && !c.starved {
                c.starved = true;
                starved.push_back(key);
            }
            None
        }
        Disposition::Canceled | Disposition::Retry | Disposition::WouldBlock => None,
        d => Some((d, e)),
    }
}
