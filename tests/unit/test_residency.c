/*
 * test_residency.c — engine/residency.h on a real file mapping: ranges
 * evicted from the page cache (posix_fadvise DONTNEED) are resident after
 * eng_mem_populate and after the reader threads drain their queue (mincore),
 * the readers count every queued byte once, waiting for a ticket waits for
 * what was queued before it (however much follows), the mapping's contents are
 * untouched, and freeing the readers with a long queue returns promptly. Where
 * the file system keeps files in memory (tmpfs), eviction does nothing and the
 * "not resident before" half of each check is skipped, saying so.
 */
#include "engine/residency.h"
#include "tests/unit/testutil.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILE_BYTES ((size_t)(6u << 20) + 123u)

static char path[4096];
static int fd = -1;
static unsigned char *map;
static size_t pg;

static unsigned char pattern(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/emoe_residency_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unsigned char *buf = malloc(FILE_BYTES);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < FILE_BYTES; i++) buf[i] = pattern(i);
    ck_assert_int_eq(write(fd, buf, FILE_BYTES), (ssize_t)FILE_BYTES);
    free(buf);
    ck_assert_int_eq(fsync(fd), 0); /* clean pages: DONTNEED can drop them */
    map = mmap(NULL, FILE_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    pg = (size_t)sysconf(_SC_PAGESIZE);
}

static void teardown(void)
{
    munmap(map, FILE_BYTES);
    close(fd);
    unlink(path);
}

/* Pages of [off, off+n) in the page cache. */
static size_t resident(size_t off, size_t n)
{
    size_t a = off / pg * pg, np = (off + n - a + pg - 1) / pg, r = 0;
    unsigned char *vec = malloc(np);
    ck_assert_ptr_nonnull(vec);
    ck_assert_int_eq(mincore(map + a, np * pg, vec), 0);
    for (size_t i = 0; i < np; i++) r += vec[i] & 1;
    free(vec);
    return r;
}

static size_t pages(size_t off, size_t n) { return (off + n - off / pg * pg + pg - 1) / pg; }

/* Evicts the whole file; 1 when the range is then (mostly) not resident. */
static int evict(size_t off, size_t n)
{
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    size_t r = resident(off, n);
    if (r * 2 > pages(off, n)) {
        fprintf(stderr, "test_residency: %s keeps the file in memory (%zu of %zu pages resident after DONTNEED): "
                        "the 'not resident before' checks are skipped\n", path, r, pages(off, n));
        return 0;
    }
    return 1;
}

START_TEST(populate_makes_resident)
{
    size_t off = 3 * pg + 17, n = (size_t)(2u << 20) + 5;
    int ev = evict(off, n);
    if (ev) ck_assert_uint_lt(resident(off, n), pages(off, n));
    eng_mem_populate(map + off, n);
    ck_assert_uint_eq(resident(off, n), pages(off, n));
    for (size_t i = off; i < off + n; i += 4093) ck_assert_uint_eq(map[i], pattern(i));
    /* a tensor view: its bytes, not more than its pages */
    size_t to = (size_t)5 << 20; /* pages not mapped yet (mapped pages are never evicted) */
    eng_tensor t = {map + to, ENG_DT_BF16, 2, {7, 300}};
    if (evict(to, 4200)) ck_assert_uint_eq(resident(to, 4200), 0);
    eng_tensor_populate(&t);
    ck_assert_uint_eq(resident(to, 4200), pages(to, 4200));
    eng_tensor_populate(&(eng_tensor){NULL, ENG_DT_F32, 1, {4}}); /* absent tensor: nothing */
}
END_TEST

START_TEST(readers_populate_queue)
{
    eng_residency *r = eng_residency_new(3);
    ck_assert_ptr_nonnull(r);
    int ev = evict(0, FILE_BYTES);
    if (ev) ck_assert_uint_lt(resident(0, FILE_BYTES), pages(0, FILE_BYTES) / 2);
    /* background: the first 4.5 MiB; urgent: the rest, unaligned, queued after it */
    size_t split = (size_t)(9u << 19) + 77;
    eng_residency_populate(r, map, split, 0);
    eng_residency_populate(r, map + split, FILE_BYTES - split, 1);
    eng_residency_populate(r, map, 0, 1); /* empty: nothing queued */
    eng_residency_drain(r);
    ck_assert_uint_eq(eng_residency_done_bytes(r), FILE_BYTES);
    ck_assert_uint_eq(resident(0, FILE_BYTES), pages(0, FILE_BYTES));
    for (size_t i = 0; i < FILE_BYTES; i += 997) ck_assert_uint_eq(map[i], pattern(i));
    /* again, warm: counted again, still correct */
    eng_residency_populate(r, map + 100, 1000, 0);
    eng_residency_drain(r);
    ck_assert_uint_eq(eng_residency_done_bytes(r), FILE_BYTES + 1000);
    eng_residency_free(r);
}
END_TEST

/* eng_residency_wait(ticket): every range queued before the ticket is
 * resident when it returns, with more queued after it (urgent, so ahead of the
 * ticket's own background range in the queue) and still being read. */
START_TEST(wait_for_ticket)
{
    eng_residency *r = eng_residency_new(1);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(eng_residency_ticket(r), 0);
    eng_residency_wait(r, 0); /* nothing queued before: returns at once */
    int ev = evict(0, FILE_BYTES);
    size_t a = (size_t)(5u << 20) + 3; /* two chunks: the readers' first and second */
    eng_residency_populate(r, map, a, 0);
    uint64_t t = eng_residency_ticket(r);
    ck_assert_uint_eq(t, 2);
    for (int i = 0; i < 50; i++) eng_residency_populate(r, map + a, FILE_BYTES - a, 1);
    ck_assert_uint_eq(eng_residency_ticket(r), 2 + 50);
    eng_residency_wait(r, t);
    if (ev) ck_assert_uint_eq(resident(0, a), pages(0, a));
    ck_assert_uint_ge(eng_residency_done_bytes(r), a);
    for (size_t i = 0; i < a; i += 1009) ck_assert_uint_eq(map[i], pattern(i));
    eng_residency_wait(r, eng_residency_ticket(r)); /* everything: the same as drain */
    ck_assert_uint_eq(eng_residency_done_bytes(r), a + 50 * (FILE_BYTES - a));
    eng_residency_free(r);
    ck_assert_uint_eq(eng_residency_ticket(NULL), 0);
    eng_residency_wait(NULL, 5); /* no readers: returns */
}
END_TEST

START_TEST(free_with_long_queue_returns)
{
    eng_residency *r = eng_residency_new(2);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < 2000; i++) eng_residency_populate(r, map, FILE_BYTES, i & 1);
    eng_residency_free(r); /* drops what is queued (the case's timeout catches a hang) */
    eng_residency_free(NULL);
    eng_residency_populate(NULL, map, 4096, 1); /* no readers: advice only */
    eng_residency_drain(NULL);
    ck_assert_uint_eq(eng_residency_done_bytes(NULL), 0);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("residency");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, populate_makes_resident);
    tcase_add_test(tc, readers_populate_queue);
    tcase_add_test(tc, wait_for_ticket);
    tcase_add_test(tc, free_with_long_queue_returns);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
