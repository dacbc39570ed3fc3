//! Sending: one output request in flight per connection (a send of the coalesced bytes, or
//! the wait for room to `sendfile` more of a file range), so bytes and file ranges leave in
//! the order they were queued; short sends are resubmitted.

use super::*;
use ringport_fallback::net;

/// Most bytes of file ranges one connection sends in a turn before the others get theirs
/// (it goes on as soon as the ring says the socket is writable again).
const FILE_TURN: usize = 1 << 20;

impl UringDriver {
    /// Start the next output request, if none is in flight: the file range at the head of
    /// the output, or the coalesced bytes queued before the next file range.
    pub(super) fn start_send<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.send_busy {
            return;
        }
        if c.files.next_at() == Some(0) {
            self.send_file(slot, dispatch);
            return;
        }
        if c.pending.is_empty() {
            return;
        }
        debug_assert!(c.sending.is_empty());
        match c.files.next_at() {
            Some(at) => {
                // Bytes up to the next file range go now; the rest waits behind it.
                let rest = c.pending.split_off(at);
                c.sending = std::mem::replace(&mut c.pending, rest);
                c.files.shift(-(at as isize));
            }
            None => std::mem::swap(&mut c.sending, &mut c.pending),
        }
        c.send_pos = 0;
        if c.pending.capacity() > self.cfg.output_high {
            // The spare buffer grew with a burst: do not keep that memory per connection.
            c.pending = Vec::new();
        }
        self.submit_send(slot);
    }

    /// Submit `sending[send_pos..]`.
    pub(super) fn submit_send(&mut self, slot: u32) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        let rest = &c.sending[c.send_pos..];
        let mut len = rest.len().min(MAX_SEND);
        let ud = user_data(Op::Send, c.id.generation(), slot);
        let entry = match choke::send(&self.cfg) {
            Some(Injected::Error(e)) => {
                // Scripted to fail: nothing is sent; a no-op takes the send's place and its
                // completion reports `e`.
                c.send_fault.set(e);
                opcode::Nop::new().build().user_data(ud)
            }
            scripted => {
                if let Some(Injected::Short(n)) = scripted {
                    len = len.min(n);
                }
                let (fd, fixed) = c.file();
                // Bytes right before a file range (a response head: the range is at the
                // head of what follows them) wait for the body's first segment: `sendfile`
                // pushes both when it ends.
                let more = if c.files.next_at() == Some(0) {
                    libc::MSG_MORE
                } else {
                    0
                };
                opcode::Send::new(fd, rest.as_ptr(), len as u32)
                    .flags(libc::MSG_NOSIGNAL | more)
                    .build()
                    .flags(fixed)
                    .user_data(ud)
            }
        };
        c.send_busy = true;
        self.push(entry);
    }

    pub(super) fn on_send<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        dispatch: &mut D,
    ) {
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        c.send_busy = false;
        let scripted = c.send_fault.take();
        if c.dying.is_some() {
            // The send that was in flight at close: what it wrote is output, the rest is
            // owed output dropped (`begin_close` left it to this completion).
            let unsent = c.sending.len().saturating_sub(c.send_pos);
            let written = match scripted {
                None if res > 0 => (res as usize).min(unsent),
                _ => 0,
            };
            Stats::add(&self.stats.bytes_out, written as u64);
            Stats::add(&self.stats.discarded, (unsent - written) as u64);
            c.send_pos = c.sending.len();
            self.maybe_finalize(slot, dispatch);
            return;
        }
        let e = match scripted {
            // The request was a no-op standing in for a failed send: nothing was written.
            Some(e) => e,
            None if res > 0 => {
                self.sent(slot, res as usize);
                return;
            }
            // A send of a non-empty buffer that wrote nothing: the connection is unusable.
            None if res == 0 => io::Error::from(io::ErrorKind::WriteZero),
            None => from_completion(res),
        };
        // Nothing was written on Retry, WouldBlock or Canceled (a cancel meant for an earlier
        // connection on this descriptor number is the only real source of Canceled here; a
        // write of zero bytes is never classified as one of these): the same bytes again.
        self.output_failed(slot, &e, "send", Self::submit_send, dispatch);
    }

    /// `n` more bytes of the send in flight were written.
    pub(super) fn sent(&mut self, slot: u32, n: usize) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        c.send_pos += n;
        if n > 0 {
            c.last_write = self.now;
        }
        Stats::add(&self.stats.bytes_out, n as u64);
        if c.send_pos < c.sending.len() {
            // Short send: the rest goes out next, before anything coalesced behind it.
            self.submit_send(slot);
        } else {
            c.sending.clear();
            c.send_pos = 0;
            self.mark_dirty(slot);
        }
    }

    /// Send the file ranges at the head of the output with `sendfile` until the socket is
    /// full (then wait for `POLLOUT`), `FILE_TURN` bytes went this turn, or the ranges are
    /// out (then the bytes behind them follow).
    pub(super) fn send_file<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if !c.nonblocking {
            if let Err(e) = c.stream.set_nonblocking(true) {
                self.stats.error(classify(Site::Configure, &e));
                self.begin_close(slot, CloseWhy::Abort, dispatch);
                return;
            }
            c.nonblocking = true;
        }
        let mut budget = FILE_TURN;
        let mut file_ended = false;
        let failed = loop {
            let Some(f) = c.files.front().filter(|_| c.files.next_at() == Some(0)) else {
                break None;
            };
            let want = usize::try_from(f.range.len)
                .unwrap_or(usize::MAX)
                .min(budget);
            match net::sendfile(&c.stream, &f.range, want) {
                Ok(0) => {
                    // The file ended before the promised length (it shrank on disk): the
                    // peer cannot be given what it was told to expect. Not a failed call.
                    file_ended = true;
                    break None;
                }
                Ok(n) => {
                    c.files.advance(n as u64);
                    c.last_write = self.now;
                    Stats::add(&self.stats.bytes_out, n as u64);
                    Stats::add(&self.stats.file_bytes, n as u64);
                    budget -= n;
                    if n < want || (budget == 0 && c.files.next_at() == Some(0)) {
                        // The socket is full, or this turn's share is spent with more of a
                        // file to send: go on when it has room. (A share spent on the last
                        // bytes of the files is not a reason to wait: the bytes queued behind
                        // them go on now.)
                        self.submit_file_wait(slot);
                        return;
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if file_ended {
            self.begin_close(slot, CloseWhy::Abort, dispatch);
            return;
        }
        match failed {
            // Would block: wait for room. Interrupted: the same call again once writable
            // (at once). Anything else aborts.
            Some(e) => self.output_failed(slot, &e, "sendfile", Self::submit_file_wait, dispatch),
            None => self.mark_dirty(slot),
        }
    }

    /// Wait (one-shot poll) until the socket has room for more of a file range.
    pub(super) fn submit_file_wait(&mut self, slot: u32) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        let (fd, fixed) = c.file();
        let entry = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
            .build()
            .flags(fixed)
            .user_data(user_data(Op::FileReady, c.id.generation(), slot));
        c.send_busy = true;
        self.push(entry);
    }

    pub(super) fn on_file_ready<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        dispatch: &mut D,
    ) {
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        c.send_busy = false;
        if c.dying.is_some() {
            self.maybe_finalize(slot, dispatch);
            return;
        }
        if res < 0 {
            let e = from_completion(res);
            self.output_failed(slot, &e, "poll", Self::submit_file_wait, dispatch);
            return;
        }
        // Writable, or an error or hangup that the next call reports.
        self.send_file(slot, dispatch);
    }

    /// An output request of `slot` failed with `e`: the same request again when nothing was
    /// lost (interrupted, would block, or cancelled by a cancel meant for an earlier
    /// connection), else the connection is aborted.
    fn output_failed<D: Dispatch>(
        &mut self,
        slot: u32,
        e: &io::Error,
        what: &str,
        resubmit: fn(&mut Self, u32),
        dispatch: &mut D,
    ) {
        match classify(Site::Send, e) {
            Disposition::Retry | Disposition::WouldBlock | Disposition::Canceled => {
                resubmit(self, slot)
            }
            d => {
                self.stats.error(d);
                if d == Disposition::Fatal {
                    if let Some(c) = self.slots[slot as usize].conn.as_ref() {
                        log_fatal(&mut self.fatal_log, what, c.id, e);
                    }
                }
                self.begin_close(slot, CloseWhy::Abort, dispatch);
            }
        }
    }
}
