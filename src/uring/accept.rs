//! Accepting: one multishot accept on the listener (one accept at a time when the listener
//! is shared by every I/O thread, so that their rings take turns); a peer's own error skips
//! it, running out of descriptors or memory pauses accepting with backoff; admitted
//! connections get a slot and their receive.

use super::*;

impl UringDriver {
    pub(super) fn arm_accept(&mut self) {
        if self.stopping_since.is_some() {
            // Stop accepting: close the listener once no accept refers to it.
            if !self.accept_armed {
                self.listener = None;
            }
            return;
        }
        if self.accept_armed || self.accept_paused_until.is_some() {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        let entry = if self.cfg.shared_listener {
            // Re-armed at the end of each turn that used it: each new wait joins the
            // listener's queue of waiters behind the other rings'.
            opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::AcceptMulti::new(Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        }
        .user_data(user_data(Op::Accept, 0, 0));
        self.accept_armed = true;
        self.push(entry);
    }

    pub(super) fn cancel_accept(&mut self) {
        if self.accept_armed {
            let entry = opcode::AsyncCancel::new(user_data(Op::Accept, 0, 0))
                .build()
                .user_data(user_data(Op::Cancel, 0, 0));
            self.push(entry);
        }
    }

    pub(super) fn on_accept<D: Dispatch>(&mut self, res: i32, more: bool, dispatch: &mut D) {
        if !more {
            self.accept_armed = false;
        }
        let scripted = choke::accept(&self.cfg);
        if res >= 0 {
            // SAFETY: a successful accept completion's result is a new descriptor that
            // nothing else owns; the stream closes it.
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            self.accepted(stream, dispatch);
            // A scripted failure never costs the descriptor the kernel handed over: the
            // connection is admitted, then the failure is acted on as if the next accept
            // had reported it.
            if let Some(e) = scripted {
                self.accept_failed(e, more);
            }
            return;
        }
        // A failed completion carries nothing: a scripted error can stand in for it.
        let e = scripted.unwrap_or_else(|| from_completion(res));
        self.accept_failed(e, more);
    }

    /// A new connection from the listener: admit it, or close it at once.
    pub(super) fn accepted<D: Dispatch>(&mut self, stream: TcpStream, dispatch: &mut D) {
        self.backoff.reset();
        if self.stopping_since.is_some() {
            // Accepted while the accept was being cancelled: not admitted.
            return;
        }
        if !self.shared.admit(self.cfg.max_connections) {
            // Over the server-wide cap: accepted and closed at once, so it does not sit in
            // the backlog.
            self.shared.refused(&self.stats, self.cfg.max_connections);
            return;
        }
        if let Err(e) = prepare_stream(&stream, false, &self.accept) {
            self.stats.error(classify(Site::Configure, &e));
            self.shared.release();
            return;
        }
        self.admit(stream, dispatch);
    }

    /// An accept failed with `e`; `more`: the multishot accept is still armed.
    pub(super) fn accept_failed(&mut self, e: io::Error, more: bool) {
        match classify(Site::Accept, &e) {
            // Re-armed at the end of the turn if the multishot ended.
            Disposition::Retry | Disposition::WouldBlock | Disposition::Canceled => {}
            Disposition::SkipPeer => self.stats.error(Disposition::SkipPeer),
            d => {
                // Exhausted (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the listener itself failed
                // (Fatal: a bug): pause accepting with backoff. Never spin, never exit. An
                // error about one peer is SkipPeer, never this.
                self.stats.error(d);
                Stats::add(&self.stats.accept_pauses, 1);
                let pause = self.backoff.step();
                self.accept_paused_until = Some(self.now + pause);
                if more {
                    self.cancel_accept();
                }
                if let Some(suppressed) = self.accept_log.allow() {
                    let what = if is_out_of_descriptors(&e) {
                        "out of file descriptors"
                    } else {
                        "accept failed"
                    };
                    tracing::warn!(
                        "{what} ({e}); pausing accept for {pause:?} \
                         ({} open connections, {suppressed} similar lines suppressed)",
                        self.open
                    );
                }
            }
        }
    }

    pub(super) fn admit<D: Dispatch>(&mut self, stream: TcpStream, dispatch: &mut D) {
        let info = match (stream.peer_addr(), self.accept.local_of(&stream)) {
            (Ok(peer), Ok(local)) => ConnInfo::new(peer, local),
            // The peer reset the connection already: the receive reports it.
            _ => ConnInfo::unknown(),
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.slots[slot as usize].generation;
        let id = ConnId::new(self.cfg.index, slot, generation);
        // Into the ring's table when its slot has a place there (else, or with no memory for
        // the entry, the connection uses its descriptor).
        let fixed = slot < self.fixed_files
            && self
                .ring
                .submitter()
                .register_files_update(slot, &[stream.as_raw_fd()])
                .is_ok();
        if fixed {
            Stats::add(&self.stats.registered, 1);
        }
        self.slots[slot as usize].conn = Some(Conn {
            id,
            stream,
            sending: Vec::new(),
            send_pos: 0,
            send_busy: false,
            send_fault: choke::ScriptedSend::default(),
            pending: Vec::new(),
            files: FileQueue::default(),
            fixed,
            nonblocking: false,
            want_drained: false,
            recv_armed: false,
            recv_cancel: false,
            cancel_busy: false,
            read_eof: false,
            closing: false,
            out_paused: false,
            over_limit: false,
            hold_reading: false,
            stalled: false,
            starved: false,
            held: None,
            dirty: false,
            dying: None,
            linger_until: None,
            last_read: IdleClock::Since(self.now),
            last_write: self.now,
        });
        self.open += 1;
        Stats::add(&self.stats.accepted, 1);
        dispatch.open(id, &info);
        self.update_recv(slot);
    }
}
