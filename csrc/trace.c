/* Fast parsers for text trace formats: valgrind lackey --trace-mem=yes (formats.md 1.2),
 * Dinero din and xdin, Pin pinatrace, and mmulab's native text records.
 *
 * The caller lends the text and the record array for one call; nothing is kept.  Every
 * read is bounded by the buffer length: the text need not end in NUL or '\n'.  The
 * pure-Python twins (emu/ref/trace.py for lackey; the line parsers of emu/trace/ for
 * the rest) define the same grammars; the fuzz tests hold the two equal.
 */
#include "emu.h"

#include <string.h>

#define KNOWN_FLAGS (EMU_TRACE_FINAL | EMU_TRACE_SKIP_BAD)

#define ADDR_DIGITS_MAX 16 /* 64-bit address: lackey prints %08lx */
#define ADDR_DIGITS_FAST 8 /* digits converted at once */
#define SIZE_DIGITS_MAX 10 /* 2^32 - 1 has 10 decimal digits */

/* Value + 1 of each hex digit, 0 for any other byte: one load and one test per byte. */
static const uint8_t hexval1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* The byte at offset 1 of a record line names its kind ("I  " has a blank there). */
static const uint8_t kind_at1[256] = {[' '] = 'I', ['L'] = 'L', ['S'] = 'S', ['M'] = 'M'};

/* Access kind of each record kind; an M record is a read, then a write. */
static const uint8_t acc_of[256] = {
    ['I'] = EMU_ACC_FETCH, ['L'] = EMU_ACC_READ, ['S'] = EMU_ACC_WRITE, ['M'] = EMU_ACC_READ};

/* First byte after the line starting at p: past its '\n', or lim. */
static const uint8_t *line_end(const uint8_t *p, const uint8_t *lim)
{
    const uint8_t *nl = memchr(p, '\n', (size_t)(lim - p));
    return nl != NULL ? nl + 1 : lim;
}

/* Lines lackey's log holds besides records: valgrind's "==pid==" messages (and the
 * "--pid--" / "**pid**" ones of -v and warnings), --trace-superblocks "SB " lines, and
 * blank lines.  p < lim. */
static int is_valgrind_line(const uint8_t *p, const uint8_t *lim)
{
    size_t n = (size_t)(lim - p);
    uint8_t c = p[0];

    if (c == '\n')
        return 1;
    if (c == '\r')
        return n == 1 || p[1] == '\n';
    if ((c == '=' || c == '-' || c == '*') && n >= 2 && p[1] == c)
        return 1;
    return c == 'S' && n >= 3 && p[1] == 'B' && p[2] == ' ';
}

/* Parses "<hex>,<dec>" [\r] (\n | lim) at q.  Returns the start of the next line, or
 * NULL with *reason set. */
static const uint8_t *parse_fields(const uint8_t *q, const uint8_t *lim, uint64_t *addr,
                                   uint32_t *size, uint32_t *reason)
{
    const uint8_t *start = q;
    uint64_t a = 0, s = 0;
    uint8_t v;

    if (lim - q >= ADDR_DIGITS_FAST) {
        /* lackey pads addresses to 8 digits: convert the first 8 without a dependency
         * chain; a byte that is no hex digit wraps to a value above 15 */
        unsigned d0 = hexval1[q[0]] - 1u, d1 = hexval1[q[1]] - 1u;
        unsigned d2 = hexval1[q[2]] - 1u, d3 = hexval1[q[3]] - 1u;
        unsigned d4 = hexval1[q[4]] - 1u, d5 = hexval1[q[5]] - 1u;
        unsigned d6 = hexval1[q[6]] - 1u, d7 = hexval1[q[7]] - 1u;
        if (((d0 | d1 | d2 | d3 | d4 | d5 | d6 | d7) & ~0xfu) == 0) {
            a = (uint64_t)(d0 << 28 | d1 << 24 | d2 << 20 | d3 << 16 | d4 << 12 | d5 << 8 |
                           d6 << 4 | d7);
            q += ADDR_DIGITS_FAST;
        }
    }
    while (q < lim && (v = hexval1[*q]) != 0) {
        a = (a << 4) | (uint64_t)(v - 1);
        q++;
    }
    if (q == start || q - start > ADDR_DIGITS_MAX || q >= lim || *q != ',') {
        *reason = EMU_TRACE_BAD_ADDR;
        return NULL;
    }
    start = ++q;
    while (q < lim && (uint8_t)(*q - '0') < 10) {
        s = s * 10 + (uint64_t)(*q - '0'); /* at most 10 digits are kept: no overflow */
        q++;
        if (q - start > SIZE_DIGITS_MAX)
            break;
    }
    if (q == start || q - start > SIZE_DIGITS_MAX || s > UINT32_MAX) {
        *reason = EMU_TRACE_BAD_SIZE;
        return NULL;
    }
    if (q < lim && *q == '\r')
        q++;
    if (q < lim) {
        if (*q != '\n') {
            *reason = EMU_TRACE_BAD_TRAILING;
            return NULL;
        }
        q++;
    }
    *addr = a;
    *size = (uint32_t)s;
    return q;
}

int emu_trace_lackey_parse(const uint8_t *buf, size_t len, uint32_t flags, emu_trace_rec *out,
                           size_t cap, emu_trace_parse_state *st)
{
    const uint8_t *p, *lim;
    uint64_t icount, lines = 0, skipped = 0, bad = 0;
    size_t n = 0;
    uint32_t status = EMU_TRACE_END;

    if (st == NULL || (buf == NULL && len != 0) || (out == NULL && cap != 0) ||
        (flags & ~(uint32_t)KNOWN_FLAGS) != 0)
        return EMU_E_INVAL;
    icount = st->icount;
    memset(st, 0, sizeof *st);
    if (len == 0) {
        st->icount = icount;
        return EMU_OK;
    }
    p = buf;
    lim = buf + len;
    if (!(flags & EMU_TRACE_FINAL)) {
        /* whole lines only: a partial last line waits for the next buffer */
        while (lim > buf && lim[-1] != '\n')
            lim--;
    }

    while (p < lim) {
        const uint8_t *q = NULL, *next = NULL;
        uint8_t kind = 0, c = p[0];
        uint32_t reason = 0, size = 0;
        uint64_t addr = 0;

        /* p[1] tells the record kind apart: "I  ", " L ", " S ", " M " */
        if (lim - p >= 3 && (kind = kind_at1[p[1]]) != 0 && c == (kind == 'I' ? 'I' : ' ') &&
            p[2] == ' ') {
            q = p + 3;
        } else if (is_valgrind_line(p, lim)) {
            p = line_end(p, lim);
            lines++;
            skipped++;
            continue;
        }
        if (q == NULL)
            reason = EMU_TRACE_BAD_KIND;
        else
            next = parse_fields(q, lim, &addr, &size, &reason);

        if (reason != 0) {
            if (bad == 0) {
                st->bad_line = lines + 1;
                st->bad_offset = (uint64_t)(p - buf);
                st->reason = reason;
            }
            if (!(flags & EMU_TRACE_SKIP_BAD)) {
                status = EMU_TRACE_BAD;
                break;
            }
            bad++;
            lines++;
            p = line_end(p, lim);
            continue;
        }

        if (cap - n < (kind == 'M' ? 2u : 1u)) {
            status = EMU_TRACE_FULL;
            break;
        }
        icount += kind == 'I';
        out[n].addr = addr;
        out[n].kind = acc_of[kind];
        out[n].asid = 0;
        out[n].size = size;
        out[n].icount = icount;
        if (kind == 'M') { /* one address read and written: a read, then a write */
            n++;
            out[n] = out[n - 1];
            out[n].kind = EMU_ACC_WRITE;
        }
        n++;
        lines++;
        p = next;
    }

    st->icount = icount;
    st->consumed = (uint64_t)(p - buf);
    st->records = n;
    st->lines = lines;
    st->skipped = skipped;
    st->bad = bad;
    st->status = status;
    return EMU_OK;
}

/* ---- din, xdin, pinatrace, native text --------------------------------------------
 * Line grammars (emu/trace/din.py, pinatrace.py and native.py parse single lines the
 * same way, for error messages): a line is blank or a comment when only whitespace
 * precedes its end or a '#'; otherwise one '\r' is dropped from its end and it must be
 * a record.  "Blank" is ' ' or '\t'; "space" is Python's bytes whitespace but '\n'. */

static int is_blank(uint8_t c)
{
    return c == ' ' || c == '\t';
}

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static const uint8_t *skip_blank(const uint8_t *p, const uint8_t *e)
{
    while (p < e && is_blank(*p))
        p++;
    return p;
}

static const uint8_t *skip_space(const uint8_t *p, const uint8_t *e)
{
    while (p < e && is_space(*p))
        p++;
    return p;
}

/* Hex digits at p.  *v gets the value, *wide is set when it needs more than 64 bits.
 * NULL: no digit. */
static const uint8_t *scan_hex_digits(const uint8_t *p, const uint8_t *e, uint64_t *v, int *wide)
{
    const uint8_t *start = p;
    uint64_t a = 0;

    *wide = 0;
    while (p < e && hexval1[*p] != 0) {
        if (a >> 60)
            *wide = 1;
        a = (a << 4) | (uint64_t)(hexval1[*p] - 1);
        p++;
    }
    *v = a;
    return p == start ? NULL : p;
}

/* [0x|0X] hex digits at p, the prefix only when a digit follows it (Dinero's rule). */
static const uint8_t *scan_hex_any(const uint8_t *p, const uint8_t *e, uint64_t *v, int *wide)
{
    if (e - p >= 3 && p[0] == '0' && (p[1] | 0x20) == 'x' && hexval1[p[2]] != 0)
        p += 2;
    return scan_hex_digits(p, e, v, wide);
}

/* Decimal digits at p, saturating at 2^32 (anything larger is refused anyway). */
static const uint8_t *scan_dec(const uint8_t *p, const uint8_t *e, uint64_t *v)
{
    uint64_t a = 0;

    while (p < e && (uint8_t)(*p - '0') < 10) {
        a = a * 10 + (uint64_t)(*p - '0');
        if (a > UINT32_MAX)
            a = (uint64_t)UINT32_MAX + 1;
        p++;
    }
    *v = a;
    return p;
}

/* What a line parser returns besides an access kind (or 'M'). */
enum { IGNORED = 0x10, BAD = 0x20 };

/* din: blank* LABEL blank+ ADDRESS (blank anything)?, both hex with optional 0x.
 * Returns the access kind, IGNORED for labels 4 and 5 (cache control), or BAD. */
static unsigned parse_din(const uint8_t *p, const uint8_t *e, uint64_t *addr, uint32_t *size)
{
    static const unsigned kinds[6] = {EMU_ACC_READ, EMU_ACC_WRITE, EMU_ACC_FETCH,
                                      EMU_ACC_READ, IGNORED,       IGNORED};
    uint64_t label;
    int wide, wide_label;

    p = scan_hex_any(skip_blank(p, e), e, &label, &wide_label);
    if (p == NULL || p == e || !is_blank(*p))
        return BAD;
    p = scan_hex_any(skip_blank(p, e), e, addr, &wide);
    if (p == NULL || wide || (p < e && !is_blank(*p)) || wide_label || label > 5)
        return BAD;
    *size = 0;
    return kinds[label];
}

/* xdin: blank* TYPE blank+ ADDRESS blank+ SIZE (blank anything)?, TYPE one of rwimcv
 * in either case, numbers hex with optional 0x. */
static unsigned parse_xdin(const uint8_t *p, const uint8_t *e, uint64_t *addr, uint32_t *size)
{
    unsigned kind;
    uint64_t s;
    int wide;

    p = skip_blank(p, e);
    if (p == e)
        return BAD;
    switch (*p | 0x20) {
    case 'r':
    case 'm':
        kind = EMU_ACC_READ;
        break;
    case 'w':
        kind = EMU_ACC_WRITE;
        break;
    case 'i':
        kind = EMU_ACC_FETCH;
        break;
    case 'c':
    case 'v':
        kind = IGNORED;
        break;
    default:
        return BAD;
    }
    if (++p == e || !is_blank(*p))
        return BAD;
    p = scan_hex_any(skip_blank(p, e), e, addr, &wide);
    if (p == NULL || wide || p == e || !is_blank(*p))
        return BAD;
    p = scan_hex_any(skip_blank(p, e), e, &s, &wide);
    if (p == NULL || wide || s > UINT32_MAX || (p < e && !is_blank(*p)))
        return BAD;
    *size = (uint32_t)s;
    return kind;
}

/* pinatrace %p value: "0x" or "0X" and 1..16 hex digits, or "(nil)". */
static const uint8_t *scan_pointer(const uint8_t *p, const uint8_t *e, uint64_t *v)
{
    const uint8_t *start;
    uint64_t a = 0;

    if (e - p >= 5 && memcmp(p, "(nil)", 5) == 0) {
        *v = 0;
        return p + 5;
    }
    if (e - p < 3 || p[0] != '0' || (p[1] | 0x20) != 'x')
        return NULL;
    start = p += 2;
    while (p < e && hexval1[*p] != 0) {
        a = (a << 4) | (uint64_t)(hexval1[*p] - 1);
        p++;
    }
    if (p == start || p - start > ADDR_DIGITS_MAX)
        return NULL;
    *v = a;
    return p;
}

/* pinatrace: blank* IP ':' blank+ (R|W) blank+ ADDRESS (blank anything)?; when the
 * first space-separated word after ADDRESS is all digits, it is the size. */
static unsigned parse_pinatrace(const uint8_t *p, const uint8_t *e, uint64_t *addr, uint32_t *size)
{
    uint64_t ip, s = 0;
    unsigned kind;
    const uint8_t *w;

    p = scan_pointer(skip_blank(p, e), e, &ip);
    if (p == NULL || p == e || *p != ':')
        return BAD;
    p++;
    if (p == e || !is_blank(*p))
        return BAD;
    p = skip_blank(p, e);
    if (p == e || (*p != 'R' && *p != 'W'))
        return BAD;
    kind = *p == 'R' ? EMU_ACC_READ : EMU_ACC_WRITE;
    p++;
    if (p == e || !is_blank(*p))
        return BAD;
    p = scan_pointer(skip_blank(p, e), e, addr);
    if (p == NULL || (p < e && !is_blank(*p)))
        return BAD;
    w = skip_space(p, e);
    p = scan_dec(w, e, &s);
    if (p == w || (p < e && !is_space(*p)))
        s = 0; /* no size: the word is something else, or there is none */
    else if (s > UINT32_MAX)
        return BAD;
    *size = (uint32_t)s;
    return kind;
}

/* A native number: decimal, or 0x/0X and hex digits; the whole word [p, e). */
static int native_number(const uint8_t *p, const uint8_t *e, uint64_t limit, uint64_t *v)
{
    const uint8_t *q;
    int wide;

    if (e - p >= 2 && p[0] == '0' && (p[1] | 0x20) == 'x') {
        q = scan_hex_digits(p + 2, e, v, &wide);
        if (q == NULL || wide)
            return 0;
    } else {
        q = scan_dec(p, e, v);
        if (q == p)
            return 0;
    }
    return q == e && *v <= limit;
}

/* native: OP ADDRESS [SIZE] [asid=N]..., words separated by spaces.  OP one of R W X M
 * (M: a read, then a write); ADDRESS [0x] and 1..16 hex digits; SIZE a number below
 * 2^32; N below 2^16.  Returns the kind ('M' for a read-modify-write) or BAD. */
static unsigned parse_native(const uint8_t *p, const uint8_t *e, uint64_t *addr, uint32_t *size,
                             uint16_t *asid)
{
    const uint8_t *w, *we, *q;
    unsigned kind;
    uint64_t v;
    int first = 1;

    w = skip_space(p, e); /* the op word: one letter */
    if (e - w < 1 || (w + 1 < e && !is_space(w[1])))
        return BAD;
    switch (*w) {
    case 'R':
        kind = EMU_ACC_READ;
        break;
    case 'W':
        kind = EMU_ACC_WRITE;
        break;
    case 'X':
        kind = EMU_ACC_FETCH;
        break;
    case 'M':
        kind = 'M';
        break;
    default:
        return BAD;
    }
    w = skip_space(w + 1, e);
    for (we = w; we < e && !is_space(*we); we++)
        ;
    if (we - w >= 2 && w[0] == '0' && (w[1] | 0x20) == 'x')
        w += 2;
    if (we == w || we - w > ADDR_DIGITS_MAX)
        return BAD;
    *addr = 0;
    for (q = w; q < we; q++) {
        if (hexval1[*q] == 0)
            return BAD;
        *addr = (*addr << 4) | (uint64_t)(hexval1[*q] - 1);
    }
    *size = 0;
    *asid = 0;
    for (w = skip_space(we, e); w < e; w = skip_space(we, e), first = 0) {
        const uint8_t *eq;
        for (we = w; we < e && !is_space(*we); we++)
            ;
        eq = memchr(w, '=', (size_t)(we - w));
        if (eq == NULL && first) {
            if (!native_number(w, we, UINT32_MAX, &v))
                return BAD;
            *size = (uint32_t)v;
        } else if (eq == w + 4 && memcmp(w, "asid", 4) == 0) {
            if (!native_number(eq + 1, we, 0xffff, &v))
                return BAD;
            *asid = (uint16_t)v;
        } else {
            return BAD;
        }
    }
    return kind;
}

/* What kind of line [p, e) is before its grammar applies. */
enum { LINE_RECORD, LINE_SKIP, LINE_DIRECTIVE };

static int classify(const uint8_t *p, const uint8_t *e, uint32_t format)
{
    p = skip_space(p, e);
    if (p == e)
        return LINE_SKIP;
    if (*p != '#')
        return LINE_RECORD;
    if (format == EMU_TRACE_NATIVE && e - p >= 2 &&
        (((p[1] | 0x20) >= 'a' && (p[1] | 0x20) <= 'z') || p[1] == '_'))
        return LINE_DIRECTIVE; /* '#' and a letter: an event or the header */
    return LINE_SKIP;
}

int emu_trace_text_parse(const uint8_t *buf, size_t len, uint32_t format, uint32_t flags,
                         emu_trace_rec *out, size_t cap, emu_trace_parse_state *st)
{
    const uint8_t *p, *lim;
    uint64_t icount, lines = 0, skipped = 0, bad = 0, ignored = 0;
    size_t n = 0;
    uint32_t status = EMU_TRACE_END;

    if (st == NULL || (buf == NULL && len != 0) || (out == NULL && cap != 0) ||
        (flags & ~(uint32_t)KNOWN_FLAGS) != 0 || format < EMU_TRACE_DIN ||
        format > EMU_TRACE_NATIVE)
        return EMU_E_INVAL;
    icount = st->icount;
    memset(st, 0, sizeof *st);
    p = buf;
    lim = buf + len;
    if (len != 0 && !(flags & EMU_TRACE_FINAL)) {
        while (lim > buf && lim[-1] != '\n')
            lim--;
    }

    while (p < lim) {
        const uint8_t *next = line_end(p, lim);
        const uint8_t *e = next > p && next[-1] == '\n' ? next - 1 : next;
        uint64_t addr = 0;
        uint32_t size = 0;
        uint16_t asid = 0;
        unsigned kind;
        int what = classify(p, e, format);

        if (what == LINE_SKIP) {
            skipped++;
            lines++;
            p = next;
            continue;
        }
        if (what == LINE_DIRECTIVE) {
            status = EMU_TRACE_DIRECTIVE;
            break;
        }
        if (e > p && e[-1] == '\r')
            e--;
        switch (format) {
        case EMU_TRACE_DIN:
            kind = parse_din(p, e, &addr, &size);
            break;
        case EMU_TRACE_XDIN:
            kind = parse_xdin(p, e, &addr, &size);
            break;
        case EMU_TRACE_PINATRACE:
            kind = parse_pinatrace(p, e, &addr, &size);
            break;
        default:
            kind = parse_native(p, e, &addr, &size, &asid);
            break;
        }
        if (kind == BAD) {
            if (bad == 0) {
                st->bad_line = lines + 1;
                st->bad_offset = (uint64_t)(p - buf);
                st->reason = EMU_TRACE_BAD_SYNTAX;
            }
            if (!(flags & EMU_TRACE_SKIP_BAD)) {
                status = EMU_TRACE_BAD;
                break;
            }
            bad++;
        } else if (kind == IGNORED) {
            ignored++;
        } else {
            if (cap - n < (kind == 'M' ? 2u : 1u)) {
                status = EMU_TRACE_FULL;
                break;
            }
            icount += kind == EMU_ACC_FETCH;
            out[n].addr = addr;
            out[n].kind = (uint8_t)(kind == 'M' ? EMU_ACC_READ : kind);
            out[n].asid = asid;
            out[n].size = size;
            out[n].icount = icount;
            if (kind == 'M') {
                n++;
                out[n] = out[n - 1];
                out[n].kind = EMU_ACC_WRITE;
            }
            n++;
        }
        lines++;
        p = next;
    }

    st->icount = icount;
    st->consumed = (uint64_t)(p - buf);
    st->records = n;
    st->lines = lines;
    st->skipped = skipped;
    st->bad = bad;
    st->ignored = ignored;
    st->status = status;
    return EMU_OK;
}
