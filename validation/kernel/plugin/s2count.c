/*
 * s2count: a QEMU TCG plugin (plugin API v1, QEMU 7.2) that counts, between two marker
 * instructions, the system instructions a Stage-2 teardown executes.
 *
 * Markers (never emitted by compilers): `orr x27, xzr, x27` (mov x27,x27) opens a window,
 * `orr x26, xzr, x26` (mov x26,x26) closes it.  At each close one JSON line is appended to the
 * output file with, per instruction address and 32-bit encoding of interest (system
 * instructions: TLBI, DC, IC, barriers, MSR/MRS; HVC/SMC; ERET), how many times it executed, plus
 * the number of executions of given entry addresses and the total instruction count of the
 * window.  Which function each address belongs to is decided afterwards, from the kernel's
 * symbols (validation/kernel/attribute.py), not here.
 *
 * Arguments: out=FILE (required), funcs=FILE (lines "addr name", hex).  Meant to run with
 * -smp 1 (one vCPU thread: the counters are not atomic).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_START 0xAA1B03FBu /* orr x27, xzr, x27 */
#define MARK_STOP 0xAA1A03FAu  /* orr x26, xzr, x26 */
#define SLOTS 65536 /* power of two; distinct (address, encoding) pairs */
#define MAX_FUNCS 256

struct slot {
    uint64_t pc;
    uint32_t enc;
    uint32_t used;
    uint64_t count;
};

struct func {
    uint64_t addr;
    uint64_t count;
    char name[96];
};

static struct slot slots[SLOTS];
static struct func funcs[MAX_FUNCS];
static size_t n_funcs;
static FILE *out;
static int enabled;
static int overflow; /* a slot could not be had: the window is reported incomplete */
static unsigned window;
static uint64_t insns_total;   /* updated inline per translation block */
static uint64_t insns_at_start;

/* Instructions worth counting: system instructions, HVC/SMC, ERET and its pointer-auth forms. */
static int interesting(uint32_t enc)
{
    if ((enc & 0xFFC00000u) == 0xD5000000u) {
        return 1;
    }
    if ((enc & 0xFFE0001Fu) == 0xD4000002u || (enc & 0xFFE0001Fu) == 0xD4000003u) {
        return 1;
    }
    return enc == 0xD69F03E0u || enc == 0xD69F0BFFu || enc == 0xD69F0FFFu;
}

static struct slot *slot_for(uint64_t pc, uint32_t enc)
{
    uint64_t h = (pc >> 2) * 0x9E3779B97F4A7C15ull;
    for (uint32_t i = 0; i < SLOTS; i++) {
        struct slot *s = &slots[(h + i) & (SLOTS - 1)];
        if (!s->used) {
            s->used = 1;
            s->pc = pc;
            s->enc = enc;
            return s;
        }
        if (s->pc == pc && s->enc == enc) {
            return s;
        }
    }
    return NULL;
}

static void dump_window(void)
{
    fprintf(out, "{\"window\": %u, \"insns\": %" PRIu64 ", \"counts\": [", window,
            insns_total - insns_at_start);
    int first = 1;
    for (size_t i = 0; i < SLOTS; i++) {
        struct slot *s = &slots[i];
        if (!s->used || !s->count) {
            continue;
        }
        fprintf(out, "%s[\"%08x\", \"%" PRIx64 "\", %" PRIu64 "]", first ? "" : ", ", s->enc,
                s->pc, s->count);
        first = 0;
        s->count = 0;
    }
    fprintf(out, "], \"funcs\": {");
    for (size_t i = 0; i < n_funcs; i++) {
        fprintf(out, "%s\"%s\": %" PRIu64, i ? ", " : "", funcs[i].name, funcs[i].count);
        funcs[i].count = 0;
    }
    fprintf(out, "}, \"overflow\": %d}\n", overflow);
    fflush(out);
    window++;
}

static void on_marker(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    if ((uintptr_t)udata == 1) {
        enabled = 1;
        insns_at_start = insns_total;
        for (size_t i = 0; i < SLOTS; i++) {
            slots[i].count = 0;
        }
        for (size_t i = 0; i < n_funcs; i++) {
            funcs[i].count = 0;
        }
    } else if (enabled) {
        enabled = 0;
        dump_window();
    }
}

static void on_insn(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    if (enabled) {
        ((struct slot *)udata)->count++;
    }
}

static void on_func(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    if (enabled) {
        ((struct func *)udata)->count++;
    }
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns_total, n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t enc;
        memcpy(&enc, qemu_plugin_insn_data(insn), sizeof(enc));
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        for (size_t f = 0; f < n_funcs; f++) {
            if (funcs[f].addr == pc) {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_func, QEMU_PLUGIN_CB_NO_REGS,
                                                       &funcs[f]);
            }
        }
        if (enc == MARK_START || enc == MARK_STOP) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)(enc == MARK_START ? 1 : 2));
        } else if (interesting(enc)) {
            struct slot *s = slot_for(pc, enc);
            if (s) {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, QEMU_PLUGIN_CB_NO_REGS, s);
            } else {
                overflow = 1;
            }
        }
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    (void)id;
    (void)p;
    if (out) {
        fclose(out);
    }
}

static int load_funcs(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    char line[512];
    while (fgets(line, sizeof(line), f) && n_funcs < MAX_FUNCS) {
        uint64_t a;
        char name[96];
        if (sscanf(line, "%" SCNx64 " %95s", &a, name) == 2) {
            funcs[n_funcs].addr = a;
            strcpy(funcs[n_funcs].name, name);
            n_funcs++;
        }
    }
    fclose(f);
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) {
            out = fopen(argv[i] + 4, "w");
        } else if (!strncmp(argv[i], "funcs=", 6)) {
            if (load_funcs(argv[i] + 6)) {
                fprintf(stderr, "s2count: cannot read %s\n", argv[i] + 6);
                return -1;
            }
        } else {
            fprintf(stderr, "s2count: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (!out) {
        fprintf(stderr, "s2count: out=FILE is required\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
