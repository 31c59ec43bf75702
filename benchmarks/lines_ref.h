/* Shared by the C baselines of benchmarks/engine.py and benchmarks/teacher.py: the line tables
 * of lab2048's engine (kernels.build_tables), the board transpose and the table move.
 *
 * move_xor[d][line]: the XOR turning a line into the moved line (Up/Down pre-shifted into column
 * position); line_reward[line]: the merge reward, or -(1 << 24) where two 32768 tiles would
 * merge (the numba engine's NEEDS_WIDE: such lines need the 2^16 path, which these baselines
 * do not have).
 */
#ifndef LINES_REF_H
#define LINES_REF_H

#include <stdint.h>

typedef uint64_t u64;

static u64 move_xor[4][65536];
static int32_t line_reward[65536];

static void build_tables(void) {
    for (unsigned line = 0; line < 65536; line++) {
        for (int rev = 0; rev < 2; rev++) {
            int cells[4], out[4] = {0, 0, 0, 0}, n = 0, open = -1;
            int32_t reward = 0;
            for (int k = 0; k < 4; k++) cells[rev ? 3 - k : k] = (line >> (12 - 4 * k)) & 15;
            for (int k = 0; k < 4; k++) {
                int e = cells[k];
                if (!e) continue;
                if (open >= 0 && out[open] == e) {
                    out[open] = e + 1;
                    reward += 1 << (e + 1);
                    open = -1;
                } else {
                    out[n] = e;
                    open = n++;
                }
            }
            unsigned moved = 0;
            for (int k = 0; k < 4; k++) {
                int e = out[rev ? 3 - k : k];
                if (e > 15) reward = -(1 << 24), e = 15;
                moved |= (unsigned)e << (12 - 4 * k);
            }
            u64 diff = line ^ moved, col = 0;
            for (int k = 0; k < 4; k++) col |= ((diff >> (12 - 4 * k)) & 15) << (60 - 16 * k);
            move_xor[rev ? 3 : 2][line] = diff;
            move_xor[rev ? 1 : 0][line] = col;
            line_reward[line] = reward;
        }
    }
}

static inline u64 transpose(u64 x) {
    u64 a1 = x & 0xF0F00F0FF0F00F0FULL, a2 = x & 0x0000F0F00000F0F0ULL;
    u64 a3 = x & 0x0F0F00000F0F0000ULL;
    u64 a = a1 | (a2 << 12) | (a3 >> 12);
    u64 b1 = a & 0xFF00FF0000FF00FFULL, b2 = a & 0x00FF00FF00000000ULL;
    u64 b3 = a & 0x00000000FF00FF00ULL;
    return b1 | (b2 >> 24) | (b3 << 24);
}

/* The board after move d (UDLR) and, in lines[], the four lines that moved (the rows for
 * Left/Right, the columns for Up/Down: indices into line_reward). */
static inline u64 move_lines(u64 b, int d, u64 lines[4]) {
    const u64 *t = move_xor[d];
    u64 out, l0, l1, l2, l3;
    if (d >= 2) {
        l0 = (b >> 48) & 0xFFFF; l1 = (b >> 32) & 0xFFFF; l2 = (b >> 16) & 0xFFFF; l3 = b & 0xFFFF;
        out = b ^ (t[l0] << 48) ^ (t[l1] << 32) ^ (t[l2] << 16) ^ t[l3];
    } else {
        u64 x = transpose(b);
        l0 = (x >> 48) & 0xFFFF; l1 = (x >> 32) & 0xFFFF; l2 = (x >> 16) & 0xFFFF; l3 = x & 0xFFFF;
        out = b ^ t[l0] ^ (t[l1] >> 4) ^ (t[l2] >> 8) ^ (t[l3] >> 12);
    }
    lines[0] = l0; lines[1] = l1; lines[2] = l2; lines[3] = l3;
    return out;
}

#endif
