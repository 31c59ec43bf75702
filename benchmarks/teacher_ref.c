/* The baseline of benchmarks/teacher.py: a plain C expectimax with the same structure as
 * lab2048.teacher.search, so both do the same work and must find the same values.
 *
 * Same as the numba search: the line heuristic table (read from a file the benchmark writes
 * from lab2048.teacher.heuristic.LINE_TABLE), LOST_VALUE, the depth rule, the spawn order
 * (cells from the low nibble up, a 2 then a 4), the probability cutoff, the transposition
 * table (16-byte entries, one slot, always replace, epoch * 16 + plies tags, a new epoch per
 * root search), the node count and the order of every floating-point operation. Boards without
 * 2^16 tiles only: a line needing the wide path (32768 + 32768) is reported as an error.
 *
 * usage: teacher_ref TABLE.f32 BOARDS.u64 DEPTH MAX_DEPTH ADAPTIVE OFFSET CUTOFF TT_BITS REPS
 *                    VALUES_OUT.f64
 * writes the 4 move values of each board (0 where illegal) to VALUES_OUT and prints one JSON
 * object: best-of-REPS seconds and the total node count.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lines_ref.h"

#define LOST_VALUE (-1600000.0)
#define HASH_MUL 0x9E3779B97F4A7C15ULL

static float line_table[65536];

typedef struct {
    u64 board;
    float value;
    uint32_t tag;
} entry;

static entry *tt;
static int tt_shift;
static uint32_t epoch;
static double cutoff;
static int64_t nodes;
static int wide_needed;

static inline u64 move(u64 b, int d) {
    u64 l[4];
    u64 out = move_lines(b, d, l);
    if ((line_reward[l[0]] | line_reward[l[1]] | line_reward[l[2]] | line_reward[l[3]]) < 0)
        wide_needed = 1;
    return out;
}

static inline double heuristic(u64 b) {
    u64 t = transpose(b);
    return (double)line_table[(b >> 48) & 0xFFFF] + (double)line_table[(b >> 32) & 0xFFFF]
         + (double)line_table[(b >> 16) & 0xFFFF] + (double)line_table[b & 0xFFFF]
         + (double)line_table[(t >> 48) & 0xFFFF] + (double)line_table[(t >> 32) & 0xFFFF]
         + (double)line_table[(t >> 16) & 0xFFFF] + (double)line_table[t & 0xFFFF];
}

static inline int has_zero_nibble(u64 x) {
    return ((x - 0x1111111111111111ULL) & ~x & 0x8888888888888888ULL) != 0;
}

static inline int is_dead(u64 b) {
    return !has_zero_nibble(b)
        && !has_zero_nibble((b ^ (b >> 4)) | 0xF000F000F000F000ULL)
        && !has_zero_nibble((b ^ (b >> 16)) | 0xFFFF000000000000ULL);
}

/* heuristic(a + tile at nibble k) from h = heuristic(a), t = transpose(a): one row and one
 * column change (exact in double, as in lab2048.teacher.heuristic.spawn_heuristic). */
static inline double spawn_heuristic(u64 a, u64 t, double h, int k, u64 tile) {
    u64 row = (a >> (16 * (k / 4))) & 0xFFFF, col = (t >> (16 * (k % 4))) & 0xFFFF;
    u64 new_row = row | (tile << (4 * (k % 4))), new_col = col | (tile << (4 * (k / 4)));
    return h - (double)line_table[row] - (double)line_table[col] + (double)line_table[new_row]
         + (double)line_table[new_col];
}

static int count_empty(u64 b) {
    int n = 0;
    for (int i = 0; i < 16; i++) n += ((b >> (4 * i)) & 15) == 0;
    return n;
}

static double chance_value(u64 a, int plies, double prob) {
    nodes++;
    if (prob < cutoff) return heuristic(a);
    entry *e = &tt[(a * HASH_MUL) >> tt_shift];
    if (e->board == a && e->tag >> 4 == epoch && (int)(e->tag & 15) >= plies)
        return (double)e->value;
    int n = count_empty(a), full = n == 1;
    u64 t = transpose(a);
    double h = plies == 1 ? heuristic(a) : 0.0, total = 0.0, v2 = 0.0;
    for (int k = 0; k < 16; k++) {
        if ((a >> (4 * k)) & 15) continue;
        for (u64 tile = 1; tile <= 2; tile++) {
            u64 c = a | (tile << (4 * k));
            double q = prob * (tile == 1 ? 0.9 : 0.1) / n, v;
            nodes++;
            if (plies == 1) {
                v = full && is_dead(c) ? LOST_VALUE : spawn_heuristic(a, t, h, k, tile);
            } else {
                v = -INFINITY;
                for (int d = 0; d < 4; d++) {
                    u64 nb = move(c, d);
                    if (nb == c) continue;
                    double w = chance_value(nb, plies - 1, q);
                    if (w > v) v = w;
                }
                if (v == -INFINITY) v = LOST_VALUE;
            }
            if (tile == 1) v2 = v;
            else total += 0.9 * v2 + 0.1 * v;
        }
    }
    double value = total / n;
    e->board = a;
    e->value = (float)value;
    e->tag = epoch * 16 + (uint32_t)plies;
    return value;
}

static int distinct_tiles(u64 b) {
    unsigned seen = 0;
    for (int i = 0; i < 16; i++) seen |= 1u << ((b >> (4 * i)) & 15);
    return __builtin_popcount(seen >> 1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc(*size);
    if (fread(data, 1, *size, f) != *size) { fprintf(stderr, "%s: short read\n", path); exit(2); }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s TABLE.f32 BOARDS.u64 DEPTH MAX_DEPTH ADAPTIVE OFFSET CUTOFF "
                "TT_BITS REPS VALUES_OUT.f64\n", argv[0]);
        return 2;
    }
    size_t size;
    float *table = read_file(argv[1], &size);
    if (size != sizeof line_table) { fprintf(stderr, "bad table size\n"); return 2; }
    for (int i = 0; i < 65536; i++) line_table[i] = table[i];
    u64 *boards = read_file(argv[2], &size);
    size_t n = size / 8;
    int depth = atoi(argv[3]), max_depth = atoi(argv[4]), adaptive = atoi(argv[5]);
    int offset = atoi(argv[6]), tt_bits = atoi(argv[8]), reps = atoi(argv[9]);
    cutoff = atof(argv[7]);
    build_tables();
    tt = calloc((size_t)1 << tt_bits, sizeof(entry));
    tt_shift = 64 - tt_bits;
    double *values = calloc(4 * n, sizeof(double)), best = 1e30;
    int64_t total_nodes = 0;
    epoch = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = now();
        nodes = 0;
        for (size_t i = 0; i < n; i++) {
            u64 b = boards[i];
            epoch++;
            int plies = depth;
            if (adaptive) {
                plies = distinct_tiles(b) - offset;
                if (plies < depth) plies = depth;
                if (plies > max_depth) plies = max_depth;
            }
            for (int d = 0; d < 4; d++) {
                u64 nb = move(b, d);
                values[4 * i + d] = nb != b ? chance_value(nb, plies, 1.0) : 0.0;
            }
        }
        double t1 = now();
        if (t1 - t0 < best) best = t1 - t0;
        total_nodes = nodes;
    }
    if (wide_needed) { fprintf(stderr, "a search needed the 2^16 path\n"); return 1; }
    FILE *f = fopen(argv[10], "wb");
    if (!f || fwrite(values, sizeof(double), 4 * n, f) != 4 * n) { perror(argv[10]); return 2; }
    fclose(f);
    printf("{\"boards\": %zu, \"seconds\": %.9f, \"nodes\": %lld}\n", n, best,
           (long long)total_nodes);
    return 0;
}
