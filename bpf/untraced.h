/* untraced.h - I/O the syscall probes cannot follow, flagged so the run says
 * incomplete: io_uring (requests run in the kernel, not as syscalls) and the
 * kind of file behind an fd, for uses of fds whose open the run never saw.
 * Nothing here runs per read or write: fd_kind only on the first use of an
 * fd (on_access's new-state branch), the io_uring probes only on io_uring calls.
 */
#ifndef ROAR_UNTRACED_H
#define ROAR_UNTRACED_H

#include "tagging.h"
#include "emit.h"

#define S_IFMT_ 00170000
#define S_IFREG_ 0100000
#define KIND_RING 0x100  /* fd_kind only: an io_uring fd (never sent to userspace) */

#ifndef ROAR_FD_KIND
#define ROAR_FD_KIND 0
#endif

/* One pointer-sized (or smaller) kernel field at base + off; 0 when unreadable. */
#define KREAD(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))

/* What the fd of the current task is: FD_NAMED for a regular file that has a
 * name (memfds, O_TMPFILE and deleted files have none: no path could be an
 * input or output), KIND_RING for an io_uring instance, 0 for anything else
 * (pipes, sockets, eventfds, devices) or when it cannot be read. The field
 * offsets come from the running kernel's BTF (roar/capture/btf.py: the
 * installed headers may be another kernel's); without BTF, always 0. */
static __always_inline u32 fd_kind(s32 fd)
{
#if ROAR_FD_KIND
    const char *t = (const char *)bpf_get_current_task();
    const char *files = NULL, *fdt = NULL, *arr = NULL, *f = NULL, *ino = NULL;
    const char *dentry = NULL, *name = NULL;
    u32 max = 0, nlink = 0;
    u16 mode = 0;
    KREAD(files, t, OFF_TASK_FILES);
    if (!files)
        return 0;
    KREAD(fdt, files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    KREAD(max, fdt, OFF_FDT_MAX_FDS);
    if (fd < 0 || (u32)fd >= max)
        return 0;
    KREAD(arr, fdt, OFF_FDT_FD);
    if (!arr)
        return 0;
    KREAD(f, arr, (u64)fd * sizeof(void *));
    if (!f)
        return 0;
    KREAD(ino, f, OFF_FILE_INODE);
    if (!ino)
        return 0;
    KREAD(mode, ino, OFF_INODE_MODE);
    if ((mode & S_IFMT_) == S_IFREG_) {
        KREAD(nlink, ino, OFF_INODE_NLINK);
        return nlink ? FD_NAMED : 0;
    }
    KREAD(dentry, f, OFF_FILE_PATH + OFF_PATH_DENTRY);
    if (!dentry)
        return 0;
    KREAD(name, dentry, OFF_DENTRY_NAME + OFF_QSTR_NAME);
    char buf[12] = {};
    if (!name || bpf_probe_read_kernel_str(buf, sizeof(buf), name) != 11)
        return 0;
    /* "[io_uring]", the name io_uring gives its anonymous inode's file */
    if (buf[0] == '[' && buf[1] == 'i' && buf[2] == 'o' && buf[3] == '_' && buf[4] == 'u' &&
        buf[5] == 'r' && buf[6] == 'i' && buf[7] == 'n' && buf[8] == 'g' && buf[9] == ']')
        return KIND_RING;
#endif
    return 0;
}

static __always_inline void flag_io_uring(u64 cg)
{
    struct roar_event ev = {};
    fill_header(&ev, cg, EV_IOURING);
    emit_small(&ev);
}

/* The first use of an fd by a process: FD_NAMED to add to its access bits;
 * an io_uring fd (a ring set up outside the run, inherited or received, then
 * mapped or read) flags the run here. */
static __always_inline u32 first_use(u64 cg, s32 fd)
{
    u32 kind = fd_kind(fd);
    if (kind == KIND_RING) {
        flag_io_uring(cg);
        return 0;
    }
    return kind;
}

/* io_uring moves file I/O out of the syscall path: any use flags the run.
 * _enter and _register come often on a busy ring: once per run cgroup. */
BPF_TABLE("lru_hash", u64, u8, uring_flagged, 1024);

static __always_inline int io_uring_used(void)
{
    u64 cg = tagged_cgroup();
    if (!cg)
        return 0;
    u8 one = 1;
    if (uring_flagged.lookup(&cg))
        return 0;
    uring_flagged.update(&cg, &one);
    flag_io_uring(cg);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_setup)
{
    u64 cg = tagged_cgroup();
    if (cg)
        flag_io_uring(cg);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_enter) { return io_uring_used(); }
TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_register) { return io_uring_used(); }

#endif
