/* The baseline of benchmarks/engine.py: a small C table-lookup 2048 engine with the same board
 * encoding, tables, spawn draws and random agent as lab2048's numba engine, so both do the same
 * work and must print the same checksums. No 2^16 support (random games never get there).
 *
 * usage: engine_ref BOARDS.u64 REPS GAMES FIRST_SEED
 * prints one JSON object: best-of-REPS seconds and checksums for
 *   scalar: the 4 moves of every board, one at a time
 *   batch:  the same into arrays of next boards, rewards and legal masks
 *   games:  GAMES random-agent games with seeds FIRST_SEED, FIRST_SEED + 1, ...
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lines_ref.h"

static inline u64 move(u64 b, int d, int64_t *reward) {
    u64 l[4];
    u64 out = move_lines(b, d, l);
    *reward = (int64_t)line_reward[l[0]] + line_reward[l[1]] + line_reward[l[2]]
              + line_reward[l[3]];
    return out;
}

static inline int legal_mask(u64 b) {
    int legal = 0;
    int64_t r;
    for (int d = 0; d < 4; d++)
        if (move(b, d, &r) != b) legal |= 1 << d;
    return legal;
}

static inline u64 draw(u64 seed, u64 k) {
    u64 z = seed + (k + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline u64 spawn(u64 b, u64 seed, u64 k) {
    u64 x = draw(seed, k);
    int n = 0;
    for (int i = 0; i < 16; i++) n += ((b >> (4 * i)) & 15) == 0;
    if (!n) return b;
    int pick = (int)(((x >> 32) * (u64)n) >> 32);
    u64 e = (x & 0xFFFFFFFFULL) < 429496730ULL ? 2 : 1;
    for (int i = 0; i < 16; i++) {
        int shift = 60 - 4 * i;
        if (((b >> shift) & 15) == 0) {
            if (pick == 0) return b | (e << shift);
            pick--;
        }
    }
    return b;
}

#define AGENT_SALT 0xA6E17A6E17A6E17ULL

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s BOARDS.u64 REPS GAMES FIRST_SEED\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f) / 8;
    fseek(f, 0, SEEK_SET);
    u64 *boards = malloc(n * 8), *next = malloc(n * 32);
    int64_t *rewards = malloc(n * 32);
    uint8_t *legal = malloc(n);
    if (fread(boards, 8, n, f) != n) { fprintf(stderr, "short read\n"); return 2; }
    fclose(f);
    int reps = atoi(argv[2]);
    long games = atol(argv[3]);
    u64 first_seed = strtoull(argv[4], NULL, 10);
    build_tables();

    double best_scalar = 1e30, best_batch = 1e30, best_games = 1e30;
    u64 scalar_check = 0, batch_check = 0, games_check = 0;
    int64_t scalar_rewards = 0, game_moves = 0, game_score = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = now();
        u64 check = 0;
        int64_t rsum = 0, r;
        for (size_t i = 0; i < n; i++)
            for (int d = 0; d < 4; d++) {
                check ^= move(boards[i], d, &r) + (u64)d;
                rsum += r;
            }
        double t1 = now();
        if (t1 - t0 < best_scalar) best_scalar = t1 - t0;
        scalar_check = check;
        scalar_rewards = rsum;

        t0 = now();
        for (size_t i = 0; i < n; i++) {
            u64 b = boards[i];
            int bits = 0;
            for (int d = 0; d < 4; d++) {
                u64 nb = move(b, d, &rewards[4 * i + d]);
                next[4 * i + d] = nb;
                bits |= (nb != b) << d;
            }
            legal[i] = (uint8_t)bits;
        }
        t1 = now();
        if (t1 - t0 < best_batch) best_batch = t1 - t0;
        check = 0;
        for (size_t i = 0; i < 4 * n; i++) check ^= next[i] + (u64)rewards[i] * 31 + legal[i / 4];
        batch_check = check;

        t0 = now();
        int64_t moves_total = 0, score_total = 0;
        check = 0;
        for (long g = 0; g < games; g++) {
            u64 seed = first_seed + (u64)g;
            u64 b = spawn(spawn(0, seed, 0), seed, 1), spawns = 2;
            int64_t moves = 0, score = 0;
            int lm = legal_mask(b);
            while (lm) {
                int count = __builtin_popcount(lm);
                u64 x = draw(seed ^ AGENT_SALT, (u64)moves);
                int pick = (int)(((x >> 32) * (u64)count) >> 32), d = 0;
                for (d = 0; d < 4; d++)
                    if ((lm >> d) & 1) { if (pick == 0) break; pick--; }
                b = spawn(move(b, d, &r), seed, spawns++);
                score += r;
                moves++;
                lm = legal_mask(b);
            }
            moves_total += moves;
            score_total += score;
            check ^= b;
        }
        t1 = now();
        if (t1 - t0 < best_games) best_games = t1 - t0;
        games_check = check;
        game_moves = moves_total;
        game_score = score_total;
    }
    printf("{\"boards\": %zu, "
           "\"scalar\": {\"seconds\": %.9f, \"checksum\": \"%016llx\", \"rewards\": %lld}, "
           "\"batch\": {\"seconds\": %.9f, \"checksum\": \"%016llx\"}, "
           "\"games\": {\"seconds\": %.9f, \"checksum\": \"%016llx\", \"moves\": %lld, "
           "\"score\": %lld}}\n",
           n, best_scalar, (unsigned long long)scalar_check, (long long)scalar_rewards,
           best_batch, (unsigned long long)batch_check, best_games,
           (unsigned long long)games_check, (long long)game_moves, (long long)game_score);
    return 0;
}
