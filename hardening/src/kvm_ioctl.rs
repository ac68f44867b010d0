//! The crate's only `unsafe` code: the `KVM_GET_API_VERSION` ioctl (K2 `kvm.api`).
//!
//! `KVM_GET_API_VERSION` is `_IO(KVMIO, 0x00)` with `KVMIO = 0xAE`: it takes no
//! argument and returns the API version (12 on every kernel since 2.6.22) as the
//! ioctl's return value. The kernel rejects the call with EINVAL unless the
//! (unused) argument is 0, and `nix::ioctl_none!` leaves the variadic argument
//! unset (whatever is in the register), so the wrapper is generated with
//! `nix::ioctl_write_int_bad!` on the `_IO` request code and called with 0.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

nix::ioctl_write_int_bad!(kvm_get_api_version, nix::request_code_none!(0xAE, 0x00));

/// Issues `KVM_GET_API_VERSION` on an open `/dev/kvm`.
pub(crate) fn api_version(file: &std::fs::File) -> Result<i32, nix::errno::Errno> {
    // SAFETY: the ioctl takes an integer argument (must be 0) and no pointer, so no
    // memory is shared with the kernel; the descriptor is owned by `file`, which
    // outlives the call. On a file that is not /dev/kvm the kernel answers ENOTTY
    // (the caller checks 10:232 first).
    unsafe { kvm_get_api_version(file.as_raw_fd(), 0) }
}
