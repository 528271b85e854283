/*
 * store_tmp.c — removes the temporaries a killed `emoe pack` (or serve's
 * first-use pack) left beside an expert store (issue 14). store_write writes
 * "<store>.tmp.<pid>" and renames it into place; kill -9 in between left the
 * temporary forever. Before a new write, every "<store>.tmp.<pid>" whose
 * process no longer exists is unlinked; one whose process is alive (another
 * pack in progress) is left alone.
 */
#include "engine/store.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int store_remove_stale_tmp(const char *path)
{
    char dbuf[PATH_MAX], bbuf[PATH_MAX];
    snprintf(dbuf, sizeof dbuf, "%s", path);
    snprintf(bbuf, sizeof bbuf, "%s", path);
    const char *dir = dirname(dbuf), *base = basename(bbuf);
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (strncmp(n, base, bl) || strncmp(n + bl, ".tmp.", 5)) continue;
        const char *p = n + bl + 5;
        char *end;
        errno = 0;
        long pid = strtol(p, &end, 10);
        if (errno || *end || end == p || pid <= 0 || pid > INT_MAX) continue;
        if (pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to judge) */
        char full[PATH_MAX + 300];
        snprintf(full, sizeof full, "%s/%s", dir, n);
        if (unlink(full) == 0) {
            removed++;
            LOG_INFO("removed %s, left by a pack that did not finish (process %ld is gone)", full, pid);
        }
    }
    closedir(d);
    return removed;
}
