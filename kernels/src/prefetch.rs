//! Cache hints: start loading memory that will be read soon, so that a loop does not wait on
//! each miss in turn.

/// Asks the CPU to start loading every cache line of `items` (the next document's packed rows,
/// say) into its caches. A hint: it changes no result, and does nothing on CPUs without a
/// prefetch instruction.
pub fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(items);
        let base = items.as_ptr().cast::<i8>();
        for line in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults, and the address is inside `items` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}
