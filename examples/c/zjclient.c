/*
 * zjclient: a ZJP/1 client in C, written from docs/PROTOCOL.md alone.
 *
 * It connects to one processor, does the readiness handshake (pings on a private
 * 32-hex-character topic until a pong arrives), sends one request and prints the
 * response as one line on stdout. See README.md for the command line and exit codes.
 *
 * Copyright the zjobs authors. MIT license.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <zmq.h>

enum { EXIT_OK = 0, EXIT_ERROR_RESPONSE = 1, EXIT_USAGE = 2, EXIT_TIMEOUT = 3, EXIT_FAILURE_IO = 4 };

#define MAX_META 16
#define MAX_FRAMES 8
#define TOPIC_LEN 32
#define PING_INTERVAL_MS 10

/* ---------------------------------------------------------------- options */

typedef enum { BODY_NIL, BODY_INT, BODY_STR } body_kind;

typedef struct {
    const char *requests;
    const char *responses;
    long timeout_ms;
    /* the request id: a str or a bin of 1..255 bytes */
    bool id_is_bin;
    unsigned char id[255];
    size_t id_len;
    const char *meta_keys[MAX_META];
    const char *meta_values[MAX_META];
    int meta_count;
    bool ping;
    body_kind body;
    int64_t body_int;
    const char *body_str;
} options;

static void usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "zjclient: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fprintf(stderr,
            "usage: zjclient --requests EP --responses EP [--timeout-ms N]\n"
            "                [--id ID | --bin-id HEX] [--meta-key K --meta-value V]...\n"
            "                [--ping] [--json-int N | --json-str S | --nil]\n");
    exit(EXIT_USAGE);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void random_bytes(unsigned char *out, size_t n) {
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(out, 1, n, f) != n) {
        fprintf(stderr, "zjclient: cannot read /dev/urandom\n");
        exit(EXIT_FAILURE_IO);
    }
    fclose(f);
}

static void random_hex(char *out, size_t nchars) {
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[64];
    random_bytes(raw, (nchars + 1) / 2);
    for (size_t i = 0; i < nchars; i++) {
        unsigned char b = raw[i / 2];
        out[i] = digits[(i % 2) ? (b & 0x0f) : (b >> 4)];
    }
    out[nchars] = '\0';
}

static void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->timeout_ms = 5000;
    o->body = BODY_NIL;
    bool have_id = false, have_body = false;
    int pending_keys = 0, pending_values = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool takes_value = strcmp(a, "--requests") == 0 || strcmp(a, "--responses") == 0 ||
                           strcmp(a, "--timeout-ms") == 0 || strcmp(a, "--id") == 0 ||
                           strcmp(a, "--bin-id") == 0 || strcmp(a, "--meta-key") == 0 ||
                           strcmp(a, "--meta-value") == 0 || strcmp(a, "--json-int") == 0 ||
                           strcmp(a, "--json-str") == 0;
        const char *v = NULL;
        if (takes_value) {
            if (i + 1 >= argc) usage("%s needs a value", a);
            v = argv[++i];
        }
        if (strcmp(a, "--requests") == 0) {
            o->requests = v;
        } else if (strcmp(a, "--responses") == 0) {
            o->responses = v;
        } else if (strcmp(a, "--timeout-ms") == 0) {
            char *end;
            errno = 0;
            o->timeout_ms = strtol(v, &end, 10);
            if (errno || *end || o->timeout_ms <= 0) usage("--timeout-ms needs a positive integer");
        } else if (strcmp(a, "--id") == 0 || strcmp(a, "--bin-id") == 0) {
            if (have_id) usage("give at most one of --id and --bin-id");
            have_id = true;
            if (strcmp(a, "--id") == 0) {
                size_t n = strlen(v);
                if (n < 1 || n > 255) usage("--id must be 1 to 255 bytes");
                memcpy(o->id, v, n);
                o->id_len = n;
            } else {
                size_t n = strlen(v);
                if (n < 2 || n % 2 || n > 510) usage("--bin-id must be 1 to 255 bytes in hex");
                for (size_t k = 0; k < n / 2; k++) {
                    int hi = hexval(v[2 * k]), lo = hexval(v[2 * k + 1]);
                    if (hi < 0 || lo < 0) usage("--bin-id is not hex: %s", v);
                    o->id[k] = (unsigned char)(hi * 16 + lo);
                }
                o->id_len = n / 2;
                o->id_is_bin = true;
            }
        } else if (strcmp(a, "--meta-key") == 0) {
            if (pending_keys >= MAX_META) usage("at most %d meta entries", MAX_META);
            o->meta_keys[pending_keys++] = v;
        } else if (strcmp(a, "--meta-value") == 0) {
            if (pending_values >= MAX_META) usage("at most %d meta entries", MAX_META);
            o->meta_values[pending_values++] = v;
        } else if (strcmp(a, "--ping") == 0) {
            o->ping = true;
        } else if (strcmp(a, "--json-int") == 0 || strcmp(a, "--json-str") == 0 ||
                   strcmp(a, "--nil") == 0) {
            if (have_body) usage("give at most one of --json-int, --json-str, --nil");
            have_body = true;
            if (strcmp(a, "--json-int") == 0) {
                char *end;
                errno = 0;
                long long n = strtoll(v, &end, 10);
                if (errno || *end || end == v) usage("--json-int needs an integer: %s", v);
                o->body = BODY_INT;
                o->body_int = (int64_t)n;
            } else if (strcmp(a, "--json-str") == 0) {
                o->body = BODY_STR;
                o->body_str = v;
            } else {
                o->body = BODY_NIL;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage("help");
        } else {
            usage("unknown argument: %s", a);
        }
    }
    if (o->requests == NULL || o->responses == NULL) usage("--requests and --responses are required");
    if (pending_keys != pending_values) usage("each --meta-key needs a --meta-value");
    o->meta_count = pending_keys;
    if (!have_id) {
        /* a fresh random str id */
        random_hex((char *)o->id, 16);
        o->id_len = 16;
    }
}

/* ---------------------------------------------------------------- time */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- msgpack helpers */

static void pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_id(msgpack_packer *pk, bool is_bin, const unsigned char *id, size_t len) {
    if (is_bin) {
        msgpack_pack_bin(pk, len);
        msgpack_pack_bin_body(pk, id, len);
    } else {
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, id, len);
    }
}

/* Look a str key up in a msgpack map; NULL when absent. */
static const msgpack_object *map_get(const msgpack_object *map, const char *key) {
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static bool obj_is_str(const msgpack_object *o, const char *s) {
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Decode exactly one msgpack value from a frame (no trailing bytes). */
static bool unpack_one(msgpack_unpacked *out, const void *data, size_t len) {
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(out, data, len, &off);
    return r == MSGPACK_UNPACK_SUCCESS && off == len;
}

/* Print a value on one line: str as text, bin as hex:..., containers JSON-like. */
static void render(FILE *f, const msgpack_object *o, bool quote_str) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("nil", f); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR:
        if (quote_str) fputc('"', f);
        fwrite(o->via.str.ptr, 1, o->via.str.size, f);
        if (quote_str) fputc('"', f);
        break;
    case MSGPACK_OBJECT_BIN:
        fputs("hex:", f);
        for (uint32_t i = 0; i < o->via.bin.size; i++)
            fprintf(f, "%02x", (unsigned char)o->via.bin.ptr[i]);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) fputc(',', f);
            render(f, &o->via.array.ptr[i], true);
        }
        fputc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', f);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) fputc(',', f);
            render(f, &o->via.map.ptr[i].key, true);
            fputc(':', f);
            render(f, &o->via.map.ptr[i].val, true);
        }
        fputc('}', f);
        break;
    default: fputs("ext", f); break;
    }
}

/* ---------------------------------------------------------------- zmq helpers */

typedef struct {
    zmq_msg_t frames[MAX_FRAMES];
    int count;     /* frames kept */
    bool too_many; /* the message had more than MAX_FRAMES frames */
} message;

static void message_close(message *m) {
    for (int i = 0; i < m->count; i++) zmq_msg_close(&m->frames[i]);
    m->count = 0;
}

/* Receive one whole multipart message; false on error. */
static bool recv_message(void *sock, message *m) {
    m->count = 0;
    m->too_many = false;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            message_close(m);
            return false;
        }
        bool more = zmq_msg_more(&part);
        if (m->count < MAX_FRAMES) {
            m->frames[m->count++] = part;
        } else {
            m->too_many = true;
            zmq_msg_close(&part);
        }
        if (!more) return true;
    }
}

/* Send header and body as a 2-frame request without blocking. */
static bool send_request(void *push, const msgpack_sbuffer *header, const msgpack_sbuffer *body) {
    if (zmq_send(push, header->data, header->size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return false;
    if (zmq_send(push, body->data, body->size, ZMQ_DONTWAIT) < 0) return false;
    return true;
}

/* A decoded response: the header is kept alive in `unpacked`. */
typedef struct {
    msgpack_unpacked header;
    msgpack_unpacked body;
    const msgpack_object *id, *status, *cached, *processor, *instance, *error, *meta;
} response;

/*
 * Parse a message as a ZJP/1 response. False for anything that is not one
 * (PROTOCOL.md, "Forward compatibility"); then nothing needs freeing.
 */
static bool parse_response(message *m, response *r) {
    if (m->too_many || m->count != 3) return false;
    size_t topic_len = zmq_msg_size(&m->frames[0]);
    if (topic_len > 0 && ((unsigned char *)zmq_msg_data(&m->frames[0]))[0] == 0x00) return false;
    msgpack_unpacked_init(&r->header);
    msgpack_unpacked_init(&r->body);
    if (!unpack_one(&r->header, zmq_msg_data(&m->frames[1]), zmq_msg_size(&m->frames[1])))
        goto fail;
    const msgpack_object *h = &r->header.data;
    if (h->type != MSGPACK_OBJECT_MAP) goto fail;
    const msgpack_object *v = map_get(h, "v");
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != 1) goto fail;
    r->id = map_get(h, "id");
    r->status = map_get(h, "status");
    r->cached = map_get(h, "cached");
    r->processor = map_get(h, "processor");
    r->instance = map_get(h, "instance");
    r->error = map_get(h, "error");
    r->meta = map_get(h, "meta");
    if (r->status == NULL || r->status->type != MSGPACK_OBJECT_STR) goto fail;
    if (!unpack_one(&r->body, zmq_msg_data(&m->frames[2]), zmq_msg_size(&m->frames[2]))) goto fail;
    return true;
fail:
    msgpack_unpacked_destroy(&r->header);
    msgpack_unpacked_destroy(&r->body);
    return false;
}

static void response_destroy(response *r) {
    msgpack_unpacked_destroy(&r->header);
    msgpack_unpacked_destroy(&r->body);
}

static bool id_matches(const msgpack_object *id, bool is_bin, const unsigned char *want, size_t len) {
    if (id == NULL) return false;
    if (is_bin)
        return id->type == MSGPACK_OBJECT_BIN && id->via.bin.size == len &&
               memcmp(id->via.bin.ptr, want, len) == 0;
    return id->type == MSGPACK_OBJECT_STR && id->via.str.size == len &&
           memcmp(id->via.str.ptr, want, len) == 0;
}

/* Wait up to `ms` for a message on the SUB socket. 1: a message, 0: none, -1: error. */
static int poll_in(void *sub, long ms) {
    zmq_pollitem_t item = {sub, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&item, 1, ms);
    if (rc < 0) return errno == EINTR ? 0 : -1;
    return rc > 0 && (item.revents & ZMQ_POLLIN) ? 1 : 0;
}

/* ---------------------------------------------------------------- output */

static void print_meta(const response *r) {
    if (r->meta == NULL || r->meta->type != MSGPACK_OBJECT_MAP) return;
    for (uint32_t i = 0; i < r->meta->via.map.size; i++) {
        fputs(" meta.", stdout);
        render(stdout, &r->meta->via.map.ptr[i].key, false);
        fputc('=', stdout);
        render(stdout, &r->meta->via.map.ptr[i].val, false);
    }
}

static void print_str_field(const char *name, const msgpack_object *o) {
    printf(" %s=", name);
    if (o != NULL) render(stdout, o, false);
}

static int print_response(const response *r) {
    int rc = EXIT_OK;
    if (obj_is_str(r->status, "ok")) {
        fputs("status=ok", stdout);
        print_str_field("id", r->id);
        printf(" cached=%s", r->cached && r->cached->type == MSGPACK_OBJECT_BOOLEAN &&
                                     r->cached->via.boolean ? "true" : "false");
        print_str_field("processor", r->processor);
        fputs(" value=", stdout);
        render(stdout, &r->body.data, false);
    } else if (obj_is_str(r->status, "error")) {
        const msgpack_object *type = r->error ? map_get(r->error, "type") : NULL;
        const msgpack_object *message = r->error ? map_get(r->error, "message") : NULL;
        fputs("status=error", stdout);
        print_str_field("id", r->id);
        print_str_field("type", type);
        print_str_field("message", message);
        rc = EXIT_ERROR_RESPONSE;
    } else { /* pong */
        fputs("status=pong", stdout);
        print_str_field("id", r->id);
        print_str_field("processor", r->processor);
        print_str_field("instance", r->instance);
    }
    print_meta(r);
    fputc('\n', stdout);
    fflush(stdout);
    return rc;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    options o;
    parse_args(argc, argv, &o);

    void *ctx = zmq_ctx_new();
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);

    /* A private reply topic: 32 random hex characters (PROTOCOL.md, "Reply topics"). */
    char topic[TOPIC_LEN + 1];
    random_hex(topic, TOPIC_LEN);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic, TOPIC_LEN);
    if (zmq_connect(sub, o.responses) != 0) {
        fprintf(stderr, "zjclient: cannot connect to %s: %s\n", o.responses, zmq_strerror(errno));
        return EXIT_USAGE;
    }
    if (zmq_connect(push, o.requests) != 0) {
        fprintf(stderr, "zjclient: cannot connect to %s: %s\n", o.requests, zmq_strerror(errno));
        return EXIT_USAGE;
    }

    int64_t deadline = now_ms() + o.timeout_ms;
    int exit_code = EXIT_TIMEOUT;

    /* Readiness: ping every ~10 ms until a pong comes back on our topic. */
    msgpack_sbuffer nil_body;
    msgpack_sbuffer_init(&nil_body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &nil_body, msgpack_sbuffer_write);
    msgpack_pack_nil(&pk);

    bool ready = false;
    unsigned ping_no = 0;
    while (!ready && now_ms() < deadline) {
        /* handshake ids embed the topic, so they cannot collide with the user's id */
        char ping_id[TOPIC_LEN + 16];
        int n = snprintf(ping_id, sizeof ping_id, "%s.%u", topic, ping_no++);
        msgpack_sbuffer hdr;
        msgpack_sbuffer_init(&hdr);
        msgpack_packer_init(&pk, &hdr, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        pack_cstr(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pack_cstr(&pk, "id");
        pack_id(&pk, false, (const unsigned char *)ping_id, (size_t)n);
        pack_cstr(&pk, "reply_to");
        pack_cstr(&pk, topic);
        pack_cstr(&pk, "ping");
        msgpack_pack_true(&pk);
        send_request(push, &hdr, &nil_body); /* EAGAIN: queue full, retry on next round */
        msgpack_sbuffer_destroy(&hdr);

        int64_t round_end = now_ms() + PING_INTERVAL_MS;
        if (round_end > deadline) round_end = deadline;
        for (;;) {
            long left = (long)(round_end - now_ms());
            if (left < 0) left = 0;
            int p = poll_in(sub, left);
            if (p < 0) goto io_error;
            if (p == 0) break;
            message m;
            if (!recv_message(sub, &m)) goto io_error;
            response r;
            if (parse_response(&m, &r)) {
                if (obj_is_str(r.status, "pong")) ready = true;
                response_destroy(&r);
            }
            message_close(&m);
            if (ready) break;
        }
    }
    if (!ready) {
        fprintf(stderr, "zjclient: timeout: no pong from %s within %ld ms\n", o.requests, o.timeout_ms);
        goto done;
    }

    /* The request. */
    msgpack_sbuffer hdr, body;
    msgpack_sbuffer_init(&hdr);
    msgpack_sbuffer_init(&body);
    msgpack_packer_init(&pk, &hdr, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3 + (o.ping ? 1 : 0) + (o.meta_count > 0 ? 1 : 0));
    pack_cstr(&pk, "v");
    msgpack_pack_int(&pk, 1);
    pack_cstr(&pk, "id");
    pack_id(&pk, o.id_is_bin, o.id, o.id_len);
    pack_cstr(&pk, "reply_to");
    pack_cstr(&pk, topic);
    if (o.ping) {
        pack_cstr(&pk, "ping");
        msgpack_pack_true(&pk);
    }
    if (o.meta_count > 0) {
        pack_cstr(&pk, "meta");
        msgpack_pack_map(&pk, (size_t)o.meta_count);
        for (int i = 0; i < o.meta_count; i++) {
            pack_cstr(&pk, o.meta_keys[i]);
            pack_cstr(&pk, o.meta_values[i]);
        }
    }
    msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
    if (o.ping || o.body == BODY_NIL)
        msgpack_pack_nil(&pk);
    else if (o.body == BODY_INT)
        msgpack_pack_int64(&pk, o.body_int);
    else
        pack_cstr(&pk, o.body_str);

    bool sent = false;
    while (!sent && now_ms() < deadline) {
        sent = send_request(push, &hdr, &body);
        if (!sent && errno != EAGAIN) {
            msgpack_sbuffer_destroy(&hdr);
            msgpack_sbuffer_destroy(&body);
            goto io_error;
        }
        if (!sent) {
            struct timespec pause = {0, 1000000}; /* queue full: try again in 1 ms */
            nanosleep(&pause, NULL);
        }
    }
    msgpack_sbuffer_destroy(&hdr);
    msgpack_sbuffer_destroy(&body);
    if (!sent) {
        fprintf(stderr, "zjclient: timeout: could not send the request within %ld ms\n", o.timeout_ms);
        goto done;
    }

    /* Wait for the response with our id; skip pongs of the handshake and anything else. */
    const char *want_status = o.ping ? "pong" : NULL;
    for (;;) {
        long left = (long)(deadline - now_ms());
        if (left <= 0) break;
        int p = poll_in(sub, left);
        if (p < 0) goto io_error;
        if (p == 0) continue;
        message m;
        if (!recv_message(sub, &m)) goto io_error;
        response r;
        bool done_now = false;
        if (parse_response(&m, &r)) {
            bool known = want_status ? obj_is_str(r.status, want_status)
                                     : obj_is_str(r.status, "ok") || obj_is_str(r.status, "error");
            if (known && id_matches(r.id, o.id_is_bin, o.id, o.id_len)) {
                exit_code = print_response(&r);
                done_now = true;
            }
            response_destroy(&r);
        }
        message_close(&m);
        if (done_now) goto done;
    }
    fprintf(stderr, "zjclient: timeout: no response within %ld ms\n", o.timeout_ms);
    exit_code = EXIT_TIMEOUT;
    goto done;

io_error:
    fprintf(stderr, "zjclient: zmq error: %s\n", zmq_strerror(errno));
    exit_code = EXIT_FAILURE_IO;
done:
    msgpack_sbuffer_destroy(&nil_body);
    zmq_close(push);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return exit_code;
}
