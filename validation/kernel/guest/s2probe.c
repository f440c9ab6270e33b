/*
 * s2probe: the guest-side program of s2teardown's real-kernel validation.
 *
 * Runs inside an emulated arm64 Linux (QEMU full-system, KVM at EL2).  It creates a KVM VM
 * backed by SIZE MiB of anonymous memory (4 KiB pages or THP) in one or two memslots, runs one
 * vCPU that stores to every 4 KiB page (so Stage-2 maps every page: 4 KiB entries, or 2 MiB
 * blocks with THP), then tears the VM down by one event between two marker instructions that
 * the counting plugin (plugin/s2count.c) watches:
 *
 *   exit            the process exits (the parent closes the window after waitpid)
 *   munmap          munmap of the whole guest memory
 *   munmap-partial  munmap of [OFF, OFF+LEN) KiB of guest memory (splits THPs when unaligned)
 *   memslot         KVM_SET_USER_MEMORY_REGION deleting memslot 0
 *   clear           madvise(MADV_DONTNEED) of the whole guest memory
 *   baseline        a window that runs no teardown (the VM dies after the window closes)
 *
 * usage: s2probe CASE SIZE_MIB 4k|thp MEMSLOTS EVENT[:protected] [OFF_KIB LEN_KIB]
 * EVENT:protected creates a protected VM (KVM_CREATE_VM type bit 31, KVM_VM_TYPE_ARM_PROTECTED;
 * pKVM, kvm-arm.mode=protected) instead of an ordinary one.
 * Prints one line "s2probe: CASE ok key=value ..." or "s2probe: CASE FAIL reason" to stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define GPA_BASE 0x40000000UL /* QEMU virt's RAM base, the model's default ram_base */
#define MMIO_EXIT 0x10000000UL

#define MARK_START() __asm__ volatile("orr x27, xzr, x27" ::: "memory")
#define MARK_STOP() __asm__ volatile("orr x26, xzr, x26" ::: "memory")

static const char *case_name = "?";

static void fail(const char *what)
{
    printf("s2probe: %s FAIL %s: %s\n", case_name, what, strerror(errno));
    fflush(stdout);
    _exit(1);
}

/* The vCPU's program: store to every page in [x0, x1) by x2, then an MMIO store to [x3]. */
static const uint32_t guest_code[] = {
    0xF9000002, /* 0: str x2, [x0]   */
    0x8B020000, /* 4: add x0, x0, x2 */
    0xEB01001F, /* 8: cmp x0, x1     */
    0x54FFFFA3, /* c: b.lo 0         */
    0xF9000060, /* 10: str x0, [x3]  */
    0x14000000, /* 14: b .           */
};

static uint64_t core_reg(size_t offset)
{
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset / sizeof(uint32_t));
}

static void set_reg(int vcpu, uint64_t id, uint64_t value)
{
    struct kvm_one_reg reg = {.id = id, .addr = (uint64_t)(uintptr_t)&value};
    if (ioctl(vcpu, KVM_SET_ONE_REG, &reg) < 0) {
        fail("KVM_SET_ONE_REG");
    }
}

/*
 * The neighbours of [lo, hi) in this process's address space, from /proc/self/maps: the end of
 * the mapping below (0 if none) and the start of the one above (0 if none).  A munmap frees the
 * page-table pages between them (free_pgtables' floor and ceiling).
 */
static void neighbours(unsigned long lo, unsigned long hi, unsigned long *floor,
                       unsigned long *ceiling)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    *floor = 0;
    *ceiling = 0;
    if (!f) {
        return;
    }
    while (fgets(line, sizeof(line), f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) != 2) {
            continue;
        }
        if (e <= lo && e > *floor) {
            *floor = e;
        }
        if (s >= hi && (*ceiling == 0 || s < *ceiling)) {
            *ceiling = s;
        }
    }
    fclose(f);
}

static long anon_huge_kib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long kib = -1;
    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: s2probe CASE SIZE_MIB 4k|thp MEMSLOTS EVENT [OFF_KIB LEN_KIB]\n");
        return 2;
    }
    case_name = argv[1];
    unsigned long size = strtoul(argv[2], NULL, 10) << 20;
    int thp = !strcmp(argv[3], "thp");
    int memslots = atoi(argv[4]);
    char *event = argv[5];
    unsigned long vm_type = 0;
    char *suffix = strstr(event, ":protected");
    if (suffix != NULL) {
        *suffix = '\0';
        vm_type = 1UL << 31; /* KVM_VM_TYPE_ARM_PROTECTED */
    }
    unsigned long off = argc > 7 ? strtoul(argv[6], NULL, 10) << 10 : 0;
    unsigned long len = argc > 7 ? strtoul(argv[7], NULL, 10) << 10 : 0;
    int is_exit = !strcmp(event, "exit");

    if (is_exit) {
        /* the child builds and kills the VM; the parent closes the window once it is reaped */
        pid_t pid = fork();
        if (pid < 0) {
            fail("fork");
        }
        if (pid > 0) {
            int status;
            if (waitpid(pid, &status, 0) < 0) {
                fail("waitpid");
            }
            MARK_STOP();
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                printf("s2probe: %s FAIL child status %d\n", case_name, status);
                return 1;
            }
            printf("s2probe: %s ok event=exit\n", case_name);
            return 0;
        }
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        fail("open /dev/kvm");
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, vm_type);
    if (vm < 0) {
        fail("KVM_CREATE_VM");
    }
    /* guest memory: 2 MiB aligned so THP can back it with whole blocks */
    uint8_t *raw = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (raw == MAP_FAILED) {
        fail("mmap");
    }
    uint8_t *mem = (uint8_t *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    if (madvise(mem, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0) {
        fail("madvise");
    }
    long huge_before = anon_huge_kib();
    memset(mem, 0x5a, size); /* host pages populated first: the vCPU's faults are Stage-2 only */
    long huge_kib = anon_huge_kib() - huge_before;
    memcpy(mem, guest_code, sizeof(guest_code));

    unsigned long slot_size = size / (unsigned long)memslots;
    for (int s = 0; s < memslots; s++) {
        struct kvm_userspace_memory_region r = {
            .slot = (uint32_t)s,
            .guest_phys_addr = GPA_BASE + s * slot_size,
            .memory_size = slot_size,
            .userspace_addr = (uint64_t)(uintptr_t)(mem + s * slot_size),
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            fail("KVM_SET_USER_MEMORY_REGION");
        }
    }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        fail("KVM_CREATE_VCPU");
    }
    struct kvm_vcpu_init init;
    if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0) {
        fail("KVM_ARM_PREFERRED_TARGET");
    }
    if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0) {
        fail("KVM_ARM_VCPU_INIT");
    }
    long run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0) {
        fail("KVM_GET_VCPU_MMAP_SIZE");
    }
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) {
        fail("mmap kvm_run");
    }
    set_reg(vcpu, core_reg(offsetof(struct kvm_regs, regs.pc)), GPA_BASE);
    set_reg(vcpu, core_reg(offsetof(struct kvm_regs, regs.regs[0])), GPA_BASE + PAGE);
    set_reg(vcpu, core_reg(offsetof(struct kvm_regs, regs.regs[1])), GPA_BASE + size);
    set_reg(vcpu, core_reg(offsetof(struct kvm_regs, regs.regs[2])), PAGE);
    set_reg(vcpu, core_reg(offsetof(struct kvm_regs, regs.regs[3])), MMIO_EXIT);
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail("KVM_RUN");
        }
        if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.phys_addr == MMIO_EXIT) {
            break;
        }
        printf("s2probe: %s FAIL unexpected exit reason %u\n", case_name, run->exit_reason);
        return 1;
    }

    if (is_exit) {
        printf("s2probe: %s faulted size=%lu thp_kib=%ld\n", case_name, size, huge_kib);
        fflush(stdout);
        MARK_START();
        _exit(0);
    }
    int rc = 0;
    unsigned long floor = 0, ceiling = 0;
    neighbours((unsigned long)(uintptr_t)mem, (unsigned long)(uintptr_t)(mem + size), &floor,
               &ceiling);
    if (!strcmp(event, "munmap")) {
        MARK_START();
        rc = munmap(mem, size);
        MARK_STOP();
    } else if (!strcmp(event, "munmap-partial")) {
        MARK_START();
        rc = munmap(mem + off, len);
        MARK_STOP();
    } else if (!strcmp(event, "memslot")) {
        struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = GPA_BASE};
        MARK_START();
        rc = ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
        MARK_STOP();
    } else if (!strcmp(event, "clear")) {
        MARK_START();
        rc = madvise(mem, size, MADV_DONTNEED);
        MARK_STOP();
    } else if (!strcmp(event, "baseline")) {
        MARK_START();
        rc = getppid() > 0 ? 0 : -1;
        MARK_STOP();
    } else {
        errno = EINVAL;
        fail("unknown event");
    }
    if (rc < 0) {
        fail(event);
    }
    /* where the host mapped guest RAM (ASLR) and its neighbours before the event: which
     * page-table pages a munmap frees depends on them */
    printf("s2probe: %s ok event=%s size=%lu thp_kib=%ld hva=0x%lx floor=0x%lx ceiling=0x%lx\n",
           case_name, event, size, huge_kib, (unsigned long)(uintptr_t)mem, floor, ceiling);
    return 0;
}
