/* roar.bpf.c - the kernel side of roar: tracepoint programs that record what
 * the processes of tagged cgroups do with files and processes.
 *
 * Every program first checks that the current task is inside a tagged run
 * cgroup (tagged_cgroup in tagging.h); everyone else returns at once.
 */
#include <uapi/linux/ptrace.h>
#include <linux/fs.h>  /* rwf_t, used by the preadv2/pwritev2 tracepoint formats */

#include "files.h"
#include "process.h"
#include "net.h"
#include "tls.h"
#include "http.h"
