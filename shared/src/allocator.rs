//! The memory allocator of every process that links the runtime: mimalloc.
//!
//! Why: a node allocates and frees many small, short-lived buffers for every request it serves
//! (headers, JSON, frames, futures), often on one thread and freed on another. Under the chat
//! bench's load glibc's allocator took about an eighth of the http node's CPU (`malloc`, `free`,
//! `malloc_consolidate`); mimalloc's thread-local free lists make the same work a fraction of
//! that. Set here, in the runtime, so every node binary (and the bench's baselines, which link
//! it too) runs on the same allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
