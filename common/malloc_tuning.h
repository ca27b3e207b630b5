// How mailark's processes ask glibc's malloc to keep memory it has freed.
#pragma once

namespace mailark {

// By default glibc gives the top of its heap back to the kernel as soon as 128 KiB of it is free, and
// maps any block of 128 KiB or more on its own; the next allocation then takes fresh pages, each a page
// fault. A process that parses message after message (every message a phrase check reads is decoded
// into buffers of its own size: 20 to 110 KB for Enron's long ones) spent more time in those faults
// than in the parse. Keeping up to 8 MiB free at the top of each heap (growing it 1 MiB at a time) and
// serving blocks below 512 KiB from the heap halved the parse time of a process that reads message
// after message (bench/phrase/first_read --tuned against without: 100 reads, 42-74 ms against 20-22;
// docs/BENCHMARKS.md "Page faults in the parse"). A search command's 20 reads in a fresh process
// gained nothing measurable (its pages are touched for the first time either way). Larger blocks stay mapped on their own: calloc of a heap block must clear
// it, where fresh mapped pages are zero already (LMDB's 1-2 MiB page lists of a write transaction,
// each command's audit entry). The price: up to 8 MiB more kept free in each heap (glibc makes one for
// each thread that allocates at once, at most 8 a core). Called first thing by main().
void tune_malloc();

}  // namespace mailark
