//! Closing: lingering close after the last byte, cancel-then-close with requests in
//! flight, and the exit drain that frees memory only once the kernel is done with it.

use super::*;

impl UringDriver {
    /// The completion of an accept or exit cancel (the cancelled requests report
    /// themselves).
    pub(super) fn on_cancel(&mut self, res: i32) {
        if res >= 0 {
            return;
        }
        let e = from_completion(res);
        let d = classify(Site::Cancel, &e);
        if d != Disposition::Canceled {
            self.stats.error(d);
            if let Some(suppressed) = self.fatal_log.allow() {
                tracing::error!("BUG: cancel failed: {e} ({suppressed} similar lines suppressed)");
            }
        }
    }

    pub(super) fn on_close_cancel<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        dispatch: &mut D,
    ) {
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        c.cancel_busy = false;
        let left = usize::from(c.recv_armed) + usize::from(c.send_busy);
        if res < 0 {
            let e = from_completion(res);
            // "Nothing found" or "already running" (Canceled: nothing left to cancel) are
            // expected; anything else is a bug.
            let d = classify(Site::Cancel, &e);
            if d != Disposition::Canceled {
                self.stats.error(d);
                log_fatal(&mut self.fatal_log, "cancel", c.id, &e);
            }
        }
        if left > 0 && (res < 0 || (res as usize) < left) {
            // Something was not cancelled: shutting the socket down ends any receive (EOF)
            // and send (EPIPE) still running, so the close cannot hang on it.
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.maybe_finalize(slot, dispatch);
    }

    /// Orderly close, once every queued byte is written: shut the write side down (the peer
    /// reads our EOF after the last byte), then read and discard input until the peer's
    /// EOF, an error or the linger deadline, and only then close. Closing at once with
    /// unread input would send a reset, which can destroy output the peer has not read yet.
    pub(super) fn begin_linger<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() || c.linger_until.is_some() {
            return;
        }
        let mut deadline = self.now + self.cfg.linger;
        if let Some(since) = self.stopping_since {
            deadline = deadline.min(since + self.cfg.shutdown_grace);
        }
        if c.read_eof || deadline <= self.now {
            // Nothing can be left unread after the peer's EOF (or there is no time left).
            self.begin_close(slot, CloseWhy::Done, dispatch);
            return;
        }
        if let Err(e) = c.stream.shutdown(Shutdown::Write) {
            // PeerGone: there is nobody to linger for. Anything else: close at once as well.
            self.stats.error(classify(Site::Configure, &e));
            self.begin_close(slot, CloseWhy::Abort, dispatch);
            return;
        }
        c.linger_until = Some(deadline);
        // Whatever paused reading no longer applies, and held input is never delivered now
        // (the stalled list drops the connection at its next pass).
        c.stalled = false;
        c.out_paused = false;
        c.over_limit = false;
        c.hold_reading = false;
        c.held = None;
        self.lingering.push((slot, c.id.generation()));
        self.update_recv(slot);
    }

    /// The earliest deadline of a lingering connection.
    pub(super) fn next_linger_deadline(&self) -> Option<Instant> {
        self.lingering
            .iter()
            .filter_map(|&(slot, generation)| {
                let s = self.slots.get(slot as usize)?;
                let c = s.conn.as_ref().filter(|_| s.generation == generation)?;
                c.linger_until.filter(|_| c.dying.is_none())
            })
            .min()
    }

    /// Close the lingering connections whose deadline passed; forget those that closed.
    pub(super) fn linger_timers<D: Dispatch>(&mut self, dispatch: &mut D) {
        if self.lingering.is_empty() {
            return;
        }
        let now = self.now;
        let mut expired = Vec::new();
        let slots = &mut self.slots;
        self.lingering
            .retain(|&(slot, generation)| match live(slots, slot, generation) {
                Some(c) if c.dying.is_none() => match c.linger_until {
                    Some(t) if t <= now => {
                        expired.push(slot);
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                _ => false,
            });
        for slot in expired {
            self.begin_close(slot, CloseWhy::Done, dispatch);
        }
    }

    /// Close a connection: at once if nothing is in flight, else after cancelling its
    /// requests and seeing their completions.
    pub(super) fn begin_close<D: Dispatch>(&mut self, slot: u32, why: CloseWhy, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() {
            return;
        }
        c.dying = Some(why);
        let unsent = if c.send_busy {
            0 // the kernel may still write it: not known to be lost
        } else {
            c.sending.len().saturating_sub(c.send_pos)
        };
        let file_owed = usize::try_from(c.files.clear()).unwrap_or(usize::MAX);
        Stats::add(
            &self.stats.discarded,
            (c.pending.len() + unsent).saturating_add(file_owed) as u64,
        );
        c.pending = Vec::new();
        c.held = None;
        if c.recv_armed || c.send_busy {
            c.cancel_busy = true;
            let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(c.fd()).all())
                .build()
                .user_data(user_data(Op::CancelConn, c.id.generation(), slot));
            self.push(entry);
        } else {
            self.finalize(slot, dispatch);
        }
    }

    pub(super) fn maybe_finalize<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        if let Some(c) = self.slots[slot as usize].conn.as_ref() {
            if c.dying.is_some() && !c.busy() {
                self.finalize(slot, dispatch);
            }
        }
    }

    /// Free the slot, close the descriptor and tell the dispatch. A connection that still
    /// has requests in flight (only when giving up at exit) is kept in the graveyard, freed
    /// after the ring.
    pub(super) fn finalize<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let s = &mut self.slots[slot as usize];
        let Some(c) = s.conn.take() else {
            return;
        };
        s.generation = (s.generation + 1) & ConnId::GENERATION_MASK;
        self.free.push(slot);
        self.open -= 1;
        self.shared.release();
        let (id, why) = (c.id, c.dying);
        if c.send_busy {
            // Given up at exit with a send in flight: its completion will not be seen.
            let unsent = c.sending.len().saturating_sub(c.send_pos);
            Stats::add(&self.stats.discarded, unsent as u64);
        }
        // The descriptor is closed before the counters move, so whoever sees `closed` go
        // up sees the descriptor gone too.
        if c.busy() {
            // Its entry in the descriptor table goes with the ring (or with the next
            // connection in the slot); its requests hold the file until they complete.
            self.graveyard.push(c);
        } else {
            // The table holds the socket open too: take it out before closing the
            // descriptor, so the close is the last and the peer sees it. Should taking it out
            // fail, shutting the socket down still ends the connection for the peer.
            if c.fixed
                && self
                    .ring
                    .submitter()
                    .register_files_update(slot, &[-1])
                    .is_err()
            {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
            drop(c);
        }
        if why == Some(CloseWhy::Idle) {
            Stats::add(&self.stats.timed_out, 1);
        }
        Stats::add(&self.stats.closed, 1);
        self.handed_late = true;
        dispatch.closed(id);
    }

    /// The shutdown grace ran out (or the ring failed): close everything now, output or
    /// not. Waits for the cancelled requests until `deadline` at most; a connection whose
    /// requests are still in flight then is reported closed and kept in the graveyard.
    pub(super) fn close_all<D: Dispatch>(&mut self, dispatch: &mut D, deadline: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.begin_close(i as u32, CloseWhy::Abort, dispatch);
            }
        }
        self.wait_until(dispatch, deadline, |d| d.open == 0);
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.finalize(i as u32, dispatch);
            }
        }
    }

    /// At exit: cancel every request still in flight (accept, wake read, anything left) and
    /// wait for their completions until `deadline`. Only `inflight == 0` makes freeing the
    /// memory those requests use safe; if the deadline passes first, `Drop` leaks it.
    pub(super) fn drain_all<D: Dispatch>(&mut self, dispatch: &mut D, deadline: Instant) {
        self.exiting = true;
        if self.inflight > 0 {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(user_data(Op::Cancel, 0, 0));
            self.push(entry);
            self.wait_until(dispatch, deadline, |d| d.inflight == 0);
        }
        self.listener = None;
    }

    /// Submit, wait and reap until `done` holds or `deadline` passes (the cancels just
    /// queued are submitted at least once), or the ring wait fails.
    pub(super) fn wait_until<D: Dispatch>(
        &mut self,
        dispatch: &mut D,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) {
        loop {
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let failed = self
                .wait(Some(left.min(Duration::from_millis(50))))
                .is_err();
            self.now = Instant::now();
            // Completions that are already there are handled even after a failed wait.
            self.reap(dispatch);
            if failed || left.is_zero() {
                return;
            }
        }
    }

    /// The ring wait failed for good: close every connection (each reported closed once),
    /// stop the whole server and drain what can be drained.
    pub(super) fn fail<D: Dispatch>(&mut self, e: &io::Error, dispatch: &mut D) {
        tracing::error!(
            "io_uring wait failed: {e}; closing this thread's {} connections and \
             stopping the server",
            self.open
        );
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if self.stopping_since.is_none() {
            self.begin_shutdown();
        }
        let deadline = self.now + DRAIN_LIMIT;
        self.close_all(dispatch, deadline);
        self.drain_all(dispatch, deadline);
        dispatch.flush();
    }
}
