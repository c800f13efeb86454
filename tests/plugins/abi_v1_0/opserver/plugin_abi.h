/* opserver plugin ABI, version 1: the one boundary between the server and a plugin .so.
 *
 * Plain C so that the plugin and the server may be built by different compilers or
 * standard libraries. Only these cross it: byte spans, UTF-8 JSON text, OPS/1 error
 * codes as integers, and the host vtable below. No C++ types, no exceptions, nothing
 * allocated on one side and freed on the other.
 *
 * Rules: structs are only ever extended by appending fields; `struct_size` tells the
 * reader how much of a struct the writer knew about. A plugin exports two symbols:
 *   ops_plugin_stamp  (data)     checked before anything in the plugin is called;
 *   ops_plugin_entry  (function) returns the plugin's descriptor.
 * The C++ wrapper in plugin.hpp (OPS_EXPORT_PLUGIN) writes both for you.
 */
#ifndef OPSERVER_PLUGIN_ABI_H
#define OPSERVER_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPS_PLUGIN_ABI_VERSION 1u

#if defined(__GNUC__)
#define OPS_EXPORT __attribute__((visibility("default")))
#else
#define OPS_EXPORT
#endif

/* The build signature: target architecture and, for C++ builds, the standard library
 * ABI. The server refuses a plugin whose signature is incompatible with its own, as nginx
 * refuses a module that "is not binary compatible". A plugin written in C reports "c" for
 * the library part and is accepted by any server of the same architecture. */
#ifdef __cplusplus
#include <cstddef> /* defines the standard library's ABI macros */
#endif
#define OPS_STR2_(x) #x
#define OPS_STR_(x) OPS_STR2_(x)
#if defined(__x86_64__)
#define OPS_ARCH_SIG_ "x86_64"
#elif defined(__aarch64__)
#define OPS_ARCH_SIG_ "aarch64"
#else
#define OPS_ARCH_SIG_ "other"
#endif
#if defined(__cplusplus) && defined(_GLIBCXX_USE_CXX11_ABI)
#define OPS_STDLIB_SIG_ "libstdc++-cxx11abi-" OPS_STR_(_GLIBCXX_USE_CXX11_ABI)
#elif defined(__cplusplus) && defined(_LIBCPP_VERSION)
#define OPS_STDLIB_SIG_ "libc++-" OPS_STR_(_LIBCPP_ABI_VERSION)
#else
#define OPS_STDLIB_SIG_ "c"
#endif
#define OPS_BUILD_SIGNATURE OPS_ARCH_SIG_ "-linux/" OPS_STDLIB_SIG_
#define OPS_BUILD_SIGNATURE_ARCH OPS_ARCH_SIG_ "-linux/"

/* Response payload direction of an operation (OPS/1 §4). */
typedef enum ops_payload_dir {
  OPS_PAYLOAD_NONE = 0, /* no payload either way */
  OPS_PAYLOAD_IN = 1,   /* the request carries one */
  OPS_PAYLOAD_OUT = 2   /* the response carries one */
} ops_payload_dir;

/* OPS/1 §3 error codes. The numbers are part of the ABI and never change. */
typedef enum ops_code {
  OPS_OK = 0,
  OPS_BAD_FRAME = 1,
  OPS_BAD_REQUEST = 2,
  OPS_AUTH_FAILED = 3,
  OPS_UNKNOWN_OPERATION = 4,
  OPS_FORBIDDEN = 5,
  OPS_INVALID_ARGS = 6,
  OPS_NOT_FOUND = 7,
  OPS_ALREADY_EXISTS = 8,
  OPS_CONFLICT = 9,
  OPS_PAYLOAD_TOO_LARGE = 10,
  OPS_CHECKSUM_MISMATCH = 11,
  OPS_QUOTA_EXCEEDED = 12,
  OPS_TIMEOUT = 13,
  OPS_UNAVAILABLE = 14,
  OPS_INTERNAL = 15
} ops_code;

typedef enum ops_log_level {
  OPS_LOG_DEBUG = 0,
  OPS_LOG_INFO = 1,
  OPS_LOG_WARN = 2,
  OPS_LOG_ERROR = 3
} ops_log_level;

/* One request in progress. OWNERSHIP: host-owned; valid only until the handler returns. */
typedef struct ops_call ops_call;

/* Services the host offers a handler. OWNERSHIP: host-owned; valid until the plugin is
 * unloaded. Every function may be called only from the thread running the handler. */
typedef struct ops_host_v1 {
  uint32_t struct_size;

  /* The authenticated user's name. OWNERSHIP: host; valid until the handler returns. */
  const char* (*user)(ops_call* call);
  /* The user's storage directory, opened O_DIRECTORY. OWNERSHIP: host; do not close. */
  int (*user_dir)(ops_call* call);
  /* A server-private directory on the same filesystem as the user directories, for
   * temporary files that must never be visible through a user's paths. The files directly
   * in it are removed by the server at start-up; subdirectories (and what they hold) are
   * kept, for state that must outlive a restart (resumable uploads keep theirs in
   * `uploads/`). OWNERSHIP: host; do not close. */
  int (*scratch_dir)(ops_call* call);
  /* This operation's "settings" object from ops.json as JSON text ("{}" if none).
   * OWNERSHIP: host; valid until the plugin is unloaded. */
  const char* (*settings)(ops_call* call);

  /* Size in bytes of the request payload (0 if none). */
  uint64_t (*payload_size)(ops_call* call);
  /* Reads up to `cap` bytes of the request payload into `buf`. Returns the number read
   * (> 0), 0 once the whole payload has been read, or -1 when it can no longer arrive
   * (client gone, stalled past the payload timeout, server shutting down). */
  int64_t (*read_payload)(ops_call* call, void* buf, size_t cap);

  /* Sends the success response: `result_json` must be one JSON object. For an
   * OPS_PAYLOAD_OUT operation, exactly `payload_size` bytes must then follow through
   * write_payload/send_file; otherwise `payload_size` must be 0. Returns 0, or -1 if
   * the connection failed (the handler should then clean up and return). */
  int (*send_result)(ops_call* call, const char* result_json, size_t len, uint64_t payload_size);
  /* Sends response payload bytes. Returns 0, or -1 if the connection failed. */
  int (*write_payload)(ops_call* call, const void* buf, size_t len);
  /* Sends `len` bytes of the open file `fd` from `offset` (sendfile where the transport
   * allows). Returns 0, or -1 if the file ended early or the connection failed; the
   * host then closes the connection, as OPS/1 §3 asks. The fd stays the caller's. */
  int (*send_file)(ops_call* call, int fd, uint64_t offset, uint64_t len);

  /* Records the error answer for this request; the handler then returns `code`.
   * `message` is for people: never a key or a host path. */
  void (*fail)(ops_call* call, int code, const char* message);
  /* Writes a line to the server log, tagged with the operation and user. */
  void (*log)(ops_call* call, int level, const char* message);

  /* Creates a user with `key` (UTF-8, NUL-terminated) and an empty storage directory,
   * atomically: the user is either fully present or absent. Returns OPS_OK,
   * OPS_ALREADY_EXISTS, OPS_INVALID_ARGS (bad name) or OPS_UNAVAILABLE/OPS_INTERNAL. */
  int (*create_user)(ops_call* call, const char* name, const char* key);

  /* Appended after create_user (check struct_size before calling: an older server lacks it).
   * Like fail(), plus machine-readable facts the client receives as error.details (OPS/1 §9),
   * e.g. {"offset": 1048576} with OPS_CONFLICT. `details_json` must be one JSON object
   * (strict: valid UTF-8, no duplicate names, nesting at most 16); anything else, or NULL
   * where a plugin meant to give details, makes the host record `internal` instead.
   * OWNERSHIP: both strings are the plugin's; the host copies them before returning. */
  void (*fail_details)(ops_call* call, int code, const char* message, const char* details_json);

  /* ---- Quotas (OPS/1 §10). Added after create_user; check struct_size before use. ----
   * A quota limits a user's bytes + reserved bytes, and its files + reserved files. An
   * operation that adds bytes or files reserves room first, before reading any payload
   * byte, and commits the actual change once its effect is published. A reservation
   * still open when the handler returns is released by the host: no failure path leaks.
   * Every quota function acts on the calling user only, is thread-safe, and may be
   * called only from the thread running the handler. */

  /* Reserves room for `bytes` more bytes and `files` more files. Returns OPS_OK and sets
   * *token (0 when this host keeps no quotas at all; committing or releasing 0 is a
   * no-op that returns OPS_OK), or OPS_QUOTA_EXCEEDED (the handler should then fail() with that
   * code; the host has not recorded an error). A dimension asked for 0 is never refused,
   * so a replacement no larger than the old file always passes. */
  int (*quota_reserve)(ops_call* call, uint64_t bytes, uint64_t files, uint64_t* token);
  /* Ends reservation `token` of this call and changes the user's usage by the actual
   * deltas (negative for a smaller replacement). Returns OPS_OK, or OPS_NOT_FOUND for a
   * token this call does not hold. */
  int (*quota_commit)(ops_call* call, uint64_t token, int64_t bytes_delta, int64_t files_delta);
  /* Gives reservation `token` back unused. OPS_OK or OPS_NOT_FOUND, as quota_commit. */
  int (*quota_release)(ops_call* call, uint64_t token);
  /* Keeps reservation `token` beyond this call, under `tag` (UTF-8, NUL-terminated, e.g.
   * a resumable upload's id; tags are per user). A tag already held grows by it. Held
   * room is reported as reserved until quota_commit_held or quota_release_held, from any
   * later call of the same user. Held reservations live in server memory: after a
   * restart a plugin holds them again. OPS_OK or OPS_NOT_FOUND (unknown token). */
  int (*quota_hold)(ops_call* call, uint64_t token, const char* tag);
  /* Ends the held reservation `tag` like quota_commit. OPS_OK or OPS_NOT_FOUND. */
  int (*quota_commit_held)(ops_call* call, const char* tag, int64_t bytes_delta,
                           int64_t files_delta);
  /* Gives the held reservation `tag` back. OPS_OK or OPS_NOT_FOUND. */
  int (*quota_release_held)(ops_call* call, const char* tag);
  /* Records a change already made without a reservation: a removal, a truncation.
   * Never refused, whatever the quota. */
  void (*usage_adjust)(ops_call* call, int64_t bytes_delta, int64_t files_delta);

  /* ---- User administration. Who may call an operation using these is the operation's
   * `allow` list (and its settings); the host checks only the rules below. Each is
   * thread-safe, may be called only from the thread running the handler, and returns
   * OPS_TIMEOUT if the request was already answered `timeout` (the effect is not made).
   * `name` arguments are UTF-8, NUL-terminated, host-copied. ---- */

  /* 1 if the user exists, else 0. */
  int (*user_exists)(ops_call* call, const char* name);
  /* create_user with quotas: each of quota_bytes / quota_files is a count (>= 0) or one
   * of OPS_LIMIT_DEFAULT (the server's default), OPS_LIMIT_NONE (no limit). */
  int (*create_user_with_quota)(ops_call* call, const char* name, const char* key,
                                int64_t quota_bytes, int64_t quota_files);
  /* Unregisters `name`: the key stops working, every connection of the user is closed,
   * its storage directory is moved out of reach at once and deleted in the background,
   * the store change is atomic and durable. OPS_OK, OPS_NOT_FOUND, OPS_FORBIDDEN (the
   * calling user itself, or "admin"), OPS_UNAVAILABLE/OPS_INTERNAL. */
  int (*remove_user)(ops_call* call, const char* name);
  /* Gives `name` the key `key` (same rules as create_user's). The old key stops working
   * at once, and every connection of that user other than this call's is closed.
   * OPS_OK, OPS_NOT_FOUND, OPS_INVALID_ARGS (bad key), OPS_UNAVAILABLE/OPS_INTERNAL. */
  int (*rekey_user)(ops_call* call, const char* name, const char* key);
  /* Sets `name`'s quotas: each a count (>= 0), OPS_LIMIT_NONE, OPS_LIMIT_DEFAULT or
   * OPS_LIMIT_KEEP (unchanged). Takes effect at once; a quota below current usage
   * refuses growth and removes nothing. OPS_OK, OPS_NOT_FOUND, OPS_INVALID_ARGS. */
  int (*set_quota)(ops_call* call, const char* name, int64_t quota_bytes, int64_t quota_files);
  /* Writes `name`'s usage (NULL: the calling user) as one JSON object, NUL-terminated,
   * into `buf` (plugin-owned, `cap` bytes): {"user","bytes","files","reserved_bytes",
   * "quota_bytes","quota_files"} with null quotas where unlimited. Returns the JSON's
   * length; if that is >= cap nothing usable was written (call again with more room).
   * Returns -OPS_NOT_FOUND for an unknown user. */
  int64_t (*get_usage)(ops_call* call, const char* name, char* buf, size_t cap);
  /* Closes every open connection of `name`, except this call's own connection when
   * `except_this_connection` is non-zero; reads and writes in progress fail at once.
   * Returns the number of connections closed. */
  int64_t (*close_user_connections)(ops_call* call, const char* name, int except_this_connection);
} ops_host_v1;

/* Special values of the quota arguments of create_user_with_quota and set_quota. */
#define OPS_LIMIT_NONE (-1)    /* no limit, whatever the server's default */
#define OPS_LIMIT_DEFAULT (-2) /* the server's default applies */
#define OPS_LIMIT_KEEP (-3)    /* set_quota only: leave as it is */

/* A handler. Returns OPS_OK after send_result, or an error code after fail().
 * `args_json` is the request's args object, already validated against the schema.
 * OWNERSHIP: args_json is host-owned and valid until the handler returns. */
typedef int (*ops_handler_fn)(const ops_host_v1* host, ops_call* call, const char* args_json,
                              size_t args_len);

/* One operation. OWNERSHIP: plugin-owned; every pointer valid until unload. */
typedef struct ops_op_v1 {
  uint32_t struct_size;
  const char* name;        /* the `operate` name */
  const char* summary;     /* one line for describe */
  const char* version;     /* semantic version of this operation */
  int payload;             /* ops_payload_dir */
  const char* args_schema; /* JSON Schema (draft-04) of args, as text */
  ops_handler_fn call;
} ops_op_v1;

/* The plugin. OWNERSHIP: plugin-owned; valid until unload. */
typedef struct ops_plugin_v1 {
  uint32_t abi_version; /* OPS_PLUGIN_ABI_VERSION the plugin was built for */
  uint32_t struct_size;
  const char* name;    /* the plugin's name, e.g. "upload" */
  const char* version; /* the plugin's version */
  size_t op_count;
  const ops_op_v1* ops;
} ops_plugin_v1;

/* Read by the server before calling anything in the plugin. */
typedef struct ops_plugin_stamp_v1 {
  uint32_t abi_version;
  uint32_t struct_size;
  const char* build_signature; /* OPS_BUILD_SIGNATURE of the plugin's build */
} ops_plugin_stamp_v1;

#define OPS_PLUGIN_STAMP_SYMBOL "ops_plugin_stamp"
#define OPS_PLUGIN_ENTRY_SYMBOL "ops_plugin_entry"
typedef const ops_plugin_v1* (*ops_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* OPSERVER_PLUGIN_ABI_H */
