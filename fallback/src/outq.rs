//! File ranges queued among a connection's output bytes, shared by both drivers.
//!
//! A driver keeps a connection's output as a byte buffer; a file range queued after some of
//! those bytes waits at that position (`at`) and goes out when the bytes before it are
//! written. Most connections never send a file: the queue then costs one pointer.

use std::collections::VecDeque;

use crate::event::FileRange;

/// A file range waiting behind the byte `at` of its connection's output buffer.
#[derive(Debug)]
pub struct QueuedFile {
    /// Position in the output buffer the range is sent at.
    pub at: usize,
    /// What is left of the range.
    pub range: FileRange,
}

#[derive(Debug, Default)]
struct Queue {
    files: VecDeque<QueuedFile>,
    bytes: u64,
}

/// The file ranges of one connection, in order.
#[derive(Debug, Default)]
pub struct FileQueue(Option<Box<Queue>>);

impl FileQueue {
    /// Queue `range` at position `at` of the output buffer.
    pub fn push(&mut self, at: usize, range: &FileRange) {
        let q = self.0.get_or_insert_with(Box::default);
        q.bytes += range.len;
        q.files.push_back(QueuedFile {
            at,
            range: range.clone(),
        });
    }

    /// The next range to send.
    pub fn front(&self) -> Option<&QueuedFile> {
        self.0.as_ref().and_then(|q| q.files.front())
    }

    /// Position of the next range, if any.
    pub fn next_at(&self) -> Option<usize> {
        self.front().map(|f| f.at)
    }

    /// `n` bytes of the next range went out (or were read for sending): advance it, and
    /// drop it when it is done.
    pub fn advance(&mut self, n: u64) {
        if let Some(q) = self.0.as_mut() {
            q.bytes -= n;
            if let Some(f) = q.files.front_mut() {
                f.range.offset += n;
                f.range.len -= n;
                if f.range.len == 0 {
                    q.files.pop_front();
                }
            }
            if q.files.is_empty() {
                self.0 = None;
            }
        }
    }

    /// Move every queued position by `delta` (bytes were inserted before them, or removed
    /// from the front of the buffer).
    pub fn shift(&mut self, delta: isize) {
        if let Some(q) = self.0.as_mut() {
            for f in &mut q.files {
                f.at = f.at.saturating_add_signed(delta);
            }
        }
    }

    /// Bytes of file ranges still to send.
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    /// True when no range is queued.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Drop every range (the connection is closing); returns the bytes they still owed.
    pub fn clear(&mut self) -> u64 {
        self.0.take().map_or(0, |q| q.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn range(len: u64) -> FileRange {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        FileRange {
            file: Arc::new(file),
            offset: 10,
            len,
        }
    }

    #[test]
    fn ranges_advance_shift_and_free() {
        let mut q = FileQueue::default();
        assert!(q.is_empty());
        q.push(5, &range(100));
        q.push(9, &range(50));
        assert_eq!(q.bytes(), 150);
        assert_eq!(q.next_at(), Some(5));
        q.advance(60);
        assert_eq!(q.front().unwrap().range.offset, 70);
        assert_eq!(q.bytes(), 90);
        q.advance(40);
        assert_eq!(q.next_at(), Some(9));
        q.shift(-4);
        assert_eq!(q.next_at(), Some(5));
        q.advance(50);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        q.push(0, &range(7));
        assert_eq!(q.clear(), 7);
        assert!(q.is_empty());
    }
}
