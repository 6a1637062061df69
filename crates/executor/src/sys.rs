//! Host system calls that neither `std` nor `nix` wraps, each behind a safe function:
//! the one module of the crate allowed `unsafe` (the workspace denies it). Every block
//! says why it is sound; callers see plain `io::Result`s and `Errno`s.

#![allow(unsafe_code)]

use nix::errno::Errno;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `fsetxattr(2)`: sets extended attribute `name` of the open file `fd` to `value`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: the fd is open for the borrow, `name` is NUL-terminated, and `value` is a
    // live slice whose pointer and length are passed together.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// `fgetxattr(2)`: reads extended attribute `name` of the open file `fd` into `buf`;
/// the attribute's length.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the fd is open for the borrow, `name` is NUL-terminated, and the buffer's
    // pointer and length are passed together.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).map_err(|_| Errno::last())
}

/// `pidfd_open(2)`: a file descriptor that refers to process `pid` for as long as it is
/// open, even once the pid is reused.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned no fd"))?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`: sends `signal` to the process `pidfd` refers to.
pub fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    signal: nix::sys::signal::Signal,
) -> io::Result<()> {
    // SAFETY: a pidfd borrowed open, a valid signal number, no siginfo, no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A pidfd registered with tokio: readable once the process has exited.
pub fn async_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open, and is the same fd,
    // for as long as it is registered.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)
}

/// Sets `IFF_UP` on interface `name` of the calling thread's network namespace.
pub fn set_interface_up(name: &str) -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| {
        // A namespace without IPv4 on lo yet still takes an AF_INET socket; binding may
        // fail where connecting would not. Any socket serves the ioctl.
        std::net::UdpSocket::bind("[::]:0")
    })?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let fd = socket.as_raw_fd();
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of the ifreq we own.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // IFF_UP is 1: it fits the short the kernel keeps the flags in.
    let up = libc::c_short::try_from(libc::IFF_UP).expect("IFF_UP fits a short");
    // SAFETY: the kernel just filled in ifru_flags, the union's active member.
    unsafe { request.ifr_ifru.ifru_flags |= up };
    // SAFETY: SIOCSIFFLAGS reads the name and flags of the ifreq we own.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `command` run in a private mount namespace without the hybrid host's cgroup2
/// mount at `/sys/fs/cgroup/unified` (what crun needs on such hosts).
pub fn without_cgroup2_mount(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child of a possibly multi-threaded parent,
    // so it only makes raw system calls (no allocation, no locks): unshare, mount and
    // umount2 on static C strings, and `last_os_error`, which only reads errno.
    unsafe {
        command.pre_exec(enter_private_mount_ns);
    }
}

fn enter_private_mount_ns() -> io::Result<()> {
    // SAFETY: plain system calls with valid NUL-terminated static strings and null
    // pointers where the kernel accepts them.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(io::Error::last_os_error());
        }
        // Private first, so that the unmount below does not propagate to the host.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pull hands the network's buffers (a few hundred KiB each) to the hashing thread
/// and frees them there. With glibc's defaults each one comes from fresh memory (mmap,
/// or heap grown and trimmed again), so every byte pulled was also a page fault (about
/// 17,000 for the benchmark's 262 MB image). Keeping those sizes on the heap and not
/// trimming it below 32 MiB lets the same pages serve again. Call it before any thread
/// starts.
pub fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}
