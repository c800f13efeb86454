/* opserver plugin ABI, version 1: the one boundary between the server and a plugin .so.
 *
 * Plain C so that the plugin and the server may be built by different compilers or
 * standard libraries. Only these cross it: byte spans, UTF-8 JSON text, OPS/1 error
 * codes as integers, and the host vtable below. No C++ types, no exceptions, nothing
 * allocated on one side and freed on the other.
 *
 * Rules: structs are only ever extended by appending fields; `struct_size` tells the
 * reader how much of a struct the writer knew about. Appending is a new minor version
 * (OPS_PLUGIN_ABI_MINOR); anything else would be a new major (OPS_PLUGIN_ABI_VERSION).
 * A plugin exports two symbols:
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

/* The ABI's major version: a server loads only plugins of its own major. */
#define OPS_PLUGIN_ABI_VERSION 1u
/* The ABI's minor version within the major: each minor only appends members (struct_size
 * tells which a writer knew). A server loads a plugin of any minor of its major; members
 * beyond a struct's struct_size are read as NULL / absent. History of major 1:
 *   minor 0: the first release (no abi_minor in the stamp);
 *   minor 1: ops_plugin_stamp_v1.abi_minor; ops_op_v1.settings_schema, init, shutdown,
 *            health (the lifecycle hooks);
 *   minor 2: ops_host_v1.node_scratch_dir (temporaries apart from other servers sharing
 *            the storage). */
#define OPS_PLUGIN_ABI_MINOR 2u

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
  /* A server-private directory on the same filesystem as the user directories, never
   * visible through a user's paths, SHARED by every server using the same storage
   * directory: for state that must outlive a restart and that any of them may continue
   * (resumable uploads keep theirs in `uploads/`). Its subdirectories are never removed by
   * the server; files left directly in it are, once 10 minutes old. Temporary files belong
   * in node_scratch_dir (below); an older server has none, and then removes the files
   * directly in this directory at start-up. OWNERSHIP: host; do not close. */
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
   * code; the host has not recorded an error), or OPS_UNAVAILABLE when the shared usage
   * store (PostgreSQL) cannot be reached (nothing reserved). A dimension asked for 0 is never
   * refused, so a replacement no larger than the old file always passes. */
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
   * later call of the same user. With the file user store held reservations live in
   * server memory (gone at a restart); with the PostgreSQL store they are in the database,
   * survive restarts and can be ended from any server. OPS_OK, OPS_NOT_FOUND (unknown
   * token) or OPS_UNAVAILABLE (the shared store cannot be reached; still the call's). */
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

  /* Minor 2 (check struct_size before calling). This server's own directory inside
   * scratch_dir (`node-<node_id>/`), on the same filesystem, for temporary files: what it
   * holds is removed when this server starts again, never by another server while this one
   * runs. Rename from it into the user's directory is atomic. OWNERSHIP: host; do not
   * close. */
  int (*node_scratch_dir)(ops_call* call);
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

  /* ---- Minor 1: the lifecycle hooks. Each may be NULL (absent); a plugin of minor 0 has
   * none of them (its struct_size ends after `call`). None of them gets an ops_call or the
   * host vtable: they run outside any request. Exceptions must never leave them. ---- */

  /* JSON Schema (draft-04), as text, of this operation's "settings" object in ops.json.
   * The server checks the settings against it at start-up, at every reload and with
   * --check-config, and refuses them naming the field. NULL: any object is accepted.
   * OWNERSHIP: plugin-owned; valid until unload. */
  const char* settings_schema;
  /* Called after the settings passed settings_schema, before the operation's first call in
   * a configuration generation: at start-up, at each reload that enables the operation
   * (again, with the new settings, also when the library is reused unchanged), and by
   * --check-config. A generation whose init fails does not come into force, and a reload
   * may still be refused after this init succeeded: read the settings a call runs under
   * through host->settings(), and make init safe to repeat. `settings_json` is the
   * settings object (UTF-8 JSON, `len` bytes, NUL-terminated). Returns 0 when the
   * operation is ready; non-zero refuses it, with a NUL-terminated reason for people in
   * `error` (plugin-written, at most `error_cap` bytes including the NUL). Never called
   * concurrently with itself or shutdown; calls of an earlier generation may be running.
   * OWNERSHIP: both buffers are host-owned and valid only until init returns. */
  int (*init)(const char* settings_json, size_t len, char* error, size_t error_cap);
  /* Called once, when the library that holds the operation is about to be unloaded: after
   * its last call has returned, at a reload that replaced or removed the .so, and at server
   * stop. Only for an operation that was initialised (init succeeded, or it has no init).
   * The server waits at most `deadline_ms` milliseconds; a shutdown still running then is
   * left behind (its library stays mapped) and the server goes on (at stop: exits). Not
   * called concurrently with init or with any call of the operation. */
  void (*shutdown)(uint32_t deadline_ms);
  /* Asked by the server's readiness check (the admin listener's /readyz), at most about once
   * a second, on a server thread, possibly while calls run; never concurrently with itself.
   * Returns 0 when healthy; non-zero when not, with a NUL-terminated reason for people in
   * `reason` (host-owned, `cap` bytes, valid until health returns). Must return quickly: it
   * should report state, not probe slow things. */
  int (*health)(char* reason, size_t cap);
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
  uint32_t abi_version; /* OPS_PLUGIN_ABI_VERSION: the major */
  uint32_t struct_size;
  const char* build_signature; /* OPS_BUILD_SIGNATURE of the plugin's build */
  /* Minor 1: OPS_PLUGIN_ABI_MINOR of the plugin's build. A stamp whose struct_size ends
   * before this member is minor 0. */
  uint32_t abi_minor;
} ops_plugin_stamp_v1;

#define OPS_PLUGIN_STAMP_SYMBOL "ops_plugin_stamp"
#define OPS_PLUGIN_ENTRY_SYMBOL "ops_plugin_entry"
typedef const ops_plugin_v1* (*ops_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* OPSERVER_PLUGIN_ABI_H */
