#![no_std]
//! Records shared by the kernel programs and user space.
