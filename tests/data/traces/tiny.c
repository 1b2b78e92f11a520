/* tiny.c: the program behind tiny.lackey (see README.md).  No libc: a few hundred
 * accesses, with read-modify-writes (lackey "M") and 8-byte accesses that straddle a
 * 4 KiB page boundary. */
static unsigned char buf[5 * 4096] __attribute__((aligned(4096)));

void _start(void)
{
    unsigned long sum = 0;

    for (unsigned long i = 0; i < 16; i++) {
        unsigned char *p = buf + 4092 + 1024 * i; /* i = 0, 4, 8, 12 straddle a page */
        __asm__ volatile("addq %1, (%0)" : : "r"(p), "r"(i) : "memory"); /* an M record */
        __asm__ volatile("addq (%1), %0" : "+r"(sum) : "r"(p) : "memory");
    }
    __asm__ volatile("mov $60, %%eax\n\tmov %0, %%rdi\n\tsyscall" : : "r"(sum & 0) : "rax", "rdi");
    __builtin_unreachable();
}
