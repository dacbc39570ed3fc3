//! The provided-buffer ring a multishot receive picks its buffers from.
//!
//! Two anonymous mappings: the ring of 16-byte descriptors the kernel reads (page aligned,
//! as `io_uring_register_buf_ring(3)` requires) and the buffers themselves. The kernel takes
//! descriptors from the head; the driver puts a buffer back at the tail as soon as it has
//! copied the bytes out of it, so every buffer is back in the ring before the next wait.
//!
//! The memory must outlive every request that may select a buffer from it. Closing the ring
//! is not enough for that: the kernel tears down the requests of a closed ring
//! asynchronously. The owner frees a `BufRing` only once none of its requests is in flight
//! (the driver waits for every completion at exit), and otherwise calls [`BufRing::leak`].

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The kernel's `struct io_uring_buf`: one descriptor of the ring. The `resv` field of the
/// first descriptor is the ring's tail, which only [`BufRing::publish`] writes.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

// The layout the kernel and the io-uring crate agree on.
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);
const _: () = assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<BufRingEntry>());

/// An anonymous private mapping, unmapped on drop unless leaked.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// The kernel may still use it: never unmapped.
    leaked: bool,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address the kernel picks: no existing
        // memory is touched, and the result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping {
            ptr,
            len,
            leaked: false,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.leaked {
            // Left mapped on purpose: a request the kernel has not finished may still use it.
            return;
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and the mapping is unmapped once;
        // the kernel no longer uses it: a `BufRing` that may still be in use by a request is
        // leaked by its owner instead of being dropped normally (`BufRing::leak`), and the
        // ring it was registered with is closed before it (`UringDriver`, `probe`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A provided-buffer ring of `count` buffers of `size` bytes, buffer group `bgid`.
pub(crate) struct BufRing {
    descriptors: Mapping,
    data: Mapping,
    count: u16,
    size: u32,
    /// Local copy of the tail; the shared one is written by [`BufRing::publish`].
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Map and fill a ring of `count` buffers (a power of two, at most 32768) of `size` bytes.
    ///
    /// # Errors
    /// `EINVAL` for a count that is not a power of two or a zero size; mmap failures.
    pub(crate) fn new(count: u16, size: u32, bgid: u16) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > 1 << 15 || size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let desc_len = usize::from(count) * std::mem::size_of::<RawBuf>();
        let data_len = usize::from(count)
            .checked_mul(size as usize)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let mut ring = BufRing {
            descriptors: Mapping::new(desc_len)?,
            data: Mapping::new(data_len)?,
            count,
            size,
            tail: 0,
            bgid,
        };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Never unmap this ring's memory: requests that may still select a buffer from it, or
    /// write into one, were not seen to complete. The mappings stay until the process ends.
    pub(crate) fn leak(&mut self) {
        self.descriptors.leaked = true;
        self.data.leaked = true;
    }

    /// The buffer group id to put in receive requests.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Register the ring with `ring` under [`BufRing::bgid`].
    ///
    /// # Errors
    /// The registration error (`EINVAL` on kernels before 5.19), to be classified at
    /// `Site::RingSetup`.
    pub(crate) fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the descriptor ring is a page-aligned mapping of `count` descriptors, valid
        // until `self` is dropped; it is unmapped only when no request that may read it is in
        // flight (`probe` submits none; the driver waits for every completion at exit and
        // otherwise leaks the mapping: `BufRing::leak`), so the kernel never reads it after
        // it is unmapped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.descriptors.ptr.as_ptr() as u64,
                self.count,
                self.bgid,
                0,
            )
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    ///
    /// Returns `None` for a buffer id or length the ring never gave out (a kernel/driver bug).
    pub(crate) fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.count || len > self.size as usize {
            return None;
        }
        let offset = usize::from(bid) * self.size as usize;
        // SAFETY: `offset + len` lies inside the data mapping (checked above). The buffer was
        // taken out of the ring by the kernel and reported in a completion, so the kernel no
        // longer writes it; it goes back only through `recycle`, which needs `&mut self`,
        // so it cannot be handed out again while this borrow lives.
        Some(unsafe { std::slice::from_raw_parts(self.data.ptr.as_ptr().add(offset), len) })
    }

    /// Give buffer `bid` back to the kernel at once.
    pub(crate) fn recycle(&mut self, bid: u16) {
        if bid < self.count {
            self.push(bid);
            self.publish();
        }
    }

    /// Write the descriptor of buffer `bid` at the local tail (not yet visible to the kernel).
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.data.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `index < count`, so the descriptor lies inside the mapping. The kernel only
        // reads descriptors between its head and the published tail; this one is at the local
        // tail, past the published one, so nobody reads it now. Only `addr`, `len` and `bid`
        // are written through raw field pointers: `resv` (the shared tail in descriptor 0)
        // is left alone, and no reference to the shared memory is created.
        unsafe {
            let d = self.descriptors.ptr.as_ptr().cast::<RawBuf>().add(index);
            ptr::addr_of_mut!((*d).addr).write(addr);
            ptr::addr_of_mut!((*d).len).write(self.size);
            ptr::addr_of_mut!((*d).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every descriptor written so far visible to the kernel.
    fn publish(&self) {
        let base = self.descriptors.ptr.as_ptr().cast::<RawBuf>();
        // SAFETY: the tail is the `resv` field of descriptor 0, inside the mapping, 2-byte
        // aligned (the mapping is page aligned); the kernel reads it atomically, and this
        // thread is its only writer, always through this atomic.
        let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*base).resv)) };
        // Release: the descriptors written before are visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sizes() {
        assert!(BufRing::new(3, 1024, 0).is_err());
        assert!(BufRing::new(0, 1024, 0).is_err());
        assert!(BufRing::new(4, 0, 0).is_err());
    }

    #[test]
    fn buffers_are_distinct_and_recycle_in_place() {
        let mut r = BufRing::new(4, 64, 0).unwrap();
        let a = r.get(0, 64).unwrap().as_ptr() as usize;
        let b = r.get(1, 64).unwrap().as_ptr() as usize;
        assert_eq!(b - a, 64);
        assert!(r.get(4, 1).is_none());
        assert!(r.get(0, 65).is_none());
        assert_eq!(r.tail, 4);
        r.recycle(2);
        assert_eq!(r.tail, 5);
        r.recycle(9);
        assert_eq!(r.tail, 5, "an id the ring never gave out is ignored");
    }
}
