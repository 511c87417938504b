/* tagging.h - which tasks are traced: the run cgroups userspace tags, and the
 * filter every program runs first (tagged_cgroup).
 */
#ifndef ROAR_TAGGING_H
#define ROAR_TAGGING_H

#include "roar_event.h"

BPF_HASH(tagged, u64, u64, 4096);                 /* run cgroup id -> 1 */
/* bit L set: some run cgroup sits at level L. Run cgroups live below their
 * callers' own cgroups (a Slurm step, a pod, a systemd scope), so at any level */
BPF_ARRAY(tag_levels, u64, 1);

/* The run cgroup this task belongs to (itself or an ancestor), or 0. Must be
 * the first thing every program does: untagged tasks return here, after one
 * array lookup and one ancestor lookup per level in use. The deepest tagged
 * ancestor wins: a run started inside another run is recorded by the inner one. */
static __always_inline u64 tagged_cgroup(void)
{
    int zero = 0;
    u64 *mask = tag_levels.lookup(&zero);
    if (!mask || !*mask)
        return 0;
    u64 m = *mask;
#pragma unroll
    for (int level = ROAR_TAG_LEVELS - 1; level > 0; level--) {
        if (!(m & (1ULL << level)))
            continue;
        u64 cg = bpf_get_current_ancestor_cgroup_id(level);
        if (cg && tagged.lookup(&cg))
            return cg;
    }
    return 0;
}

#endif
