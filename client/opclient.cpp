// opclient: the generic OPS/1 client. Flags and help only; the verbs live in
// *_command(s).cpp and all protocol work in the SDK's client library.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "command_suggest.hpp"
#include "commands.hpp"
#include "exit_codes.hpp"
#include "local_files.hpp"
#include "remote_paths.hpp"

#ifndef OPS_VERSION
#define OPS_VERSION "0.0.0"
#endif

namespace {

using namespace ops::opclient;

constexpr const char* kExitTable = R"(Exit status:
  0   success
  1   a local file or pipe could not be read or written
  2   usage: bad flags or arguments, no user, no key
  3   cannot connect: unknown host, refused, timed out
  4   login failed (auth_failed), or the server's proof was wrong
  5   connection lost mid-request, timed out, or the server broke OPS/1
  6   download: the file's SHA-256 differs from the server's (LOCAL.part is kept)
  10+ the server answered an OPS/1 error: 11 bad_frame, 12 bad_request,
      14 unknown_operation, 15 forbidden, 16 invalid_args, 17 not_found,
      18 already_exists, 19 conflict, 20 payload_too_large, 21 checksum_mismatch,
      22 quota_exceeded, 23 timeout, 24 unavailable, 25 internal)";

constexpr const char* kMainFooter = R"(
The key is read from --key-file, OPS_KEY_FILE or OPS_KEY, never from the command line.
Connection options may come before or after the command.

Examples:
  export OPS_SERVER=files.example.org:9000 OPS_USER=alice OPS_KEY_FILE=~/.ops/alice.key
  opclient describe
  opclient upload report.pdf docs/report.pdf
  opclient download docs/report.pdf
  opclient ls docs -R
  opclient mv docs/report.pdf archive/2025/report.pdf
  opclient rm archive/2019 -r
  opclient call list -a path=docs -a recursive=true
  OPS_SERVER=tls://files.example.org:9443 opclient ls       over TLS
  opclient --tls --ca my-ca.pem --server 10.0.0.5:9443 ls   a private CA

)";

// The options that take the next word as their value (unknown_command skips it).
const std::vector<std::string> kOptionsWithValue = {
    "-s", "--server", "-u", "--user", "-k", "--key-file", "--ca", "--cert", "--key", "--timeout"};

struct Cli {
  ConnectionFlags conn;
  CallFlags call;
  DescribeFlags describe;
  UploadFlags upload;
  DownloadFlags download;
  LsFlags ls;
  RegisterFlags reg;
  RmFlags rm;
  MvFlags mv;
  MkdirFlags mkdir;
  StatFlags stat;
  UsageFlags usage;
  SetQuotaFlags set_quota;
  UnregisterFlags unregister;
  RekeyFlags rekey;
};

void add_connection_options(CLI::App& app, Cli& cli) {
  app.add_option("-s,--server", cli.conn.server,
                 "Server address HOST:PORT or [IPv6]:PORT; tls://HOST:PORT for TLS")
      ->envname("OPS_SERVER")
      ->capture_default_str()
      ->group("Connection");
  app.add_option("-u,--user", cli.conn.user, "User name to log in as")
      ->envname("OPS_USER")
      ->group("Connection");
  app.add_option("-k,--key-file", cli.conn.key_file,
                 "File holding the user's key (else OPS_KEY from the environment)")
      ->envname("OPS_KEY_FILE")
      ->group("Connection");
  app.add_flag("--tls", cli.conn.tls,
               "Connect over TLS (also: --server tls://HOST:PORT); the login is bound to the "
               "TLS connection (hmac-sha256-plus)")
      ->group("TLS");
  app.add_option("--ca", cli.conn.ca_file,
                 "Trust the CA certificates in this PEM file for the server (default: the "
                 "system's trust store)")
      ->group("TLS");
  app.add_option("--cert", cli.conn.cert_file,
                 "Client certificate (PEM chain) for servers that require one")
      ->group("TLS");
  app.add_option("--key", cli.conn.tls_key_file,
                 "Private key of --cert (PEM); not the user's key, which is --key-file")
      ->group("TLS");
  app.add_flag("--insecure-no-binding", cli.conn.insecure_no_binding,
               "Log in over TLS even if the server does not offer channel binding (a relay "
               "holding a certificate you trust could then pass the login on)")
      ->group("TLS");
  app.add_option("--timeout", cli.conn.timeout_seconds,
                 "Seconds to wait for connect or any progress")
      ->capture_default_str()
      ->group("Connection");
  app.add_flag("-q,--quiet", cli.conn.output.quiet, "No progress bar and no notes on stderr")
      ->group("Output");
  app.add_flag("-v,--verbose", cli.conn.verbose,
               "Print every frame header sent (>) and received (<) on stderr; proofs and "
               "keys are redacted, payloads never shown")
      ->group("Output");
}

void add_commands(CLI::App& app, Cli& cli, std::string& chosen) {
  auto* call = app.add_subcommand("call", "Call any operation, with payloads from/to files");
  call->add_option("OP", cli.call.operation, "Operation name (see describe)")->required();
  call->add_option("--args", cli.call.args_json, "Arguments as one JSON object");
  call->add_option("-a,--arg", cli.call.assigns,
                   "One argument key=value; the value is JSON if it parses, else a string")
      ->allow_extra_args(false);
  call->add_option("--in", cli.call.in, "Send this file as the request payload (- = stdin)");
  call->add_option("--out", cli.call.out,
                   "Write the response payload here (- = stdout; the result then goes to stderr)");
  call->footer(R"(
The result is printed as JSON: indented on a terminal, one line otherwise.
A response payload without --out is skipped with a note.

Examples:
  opclient call describe
  opclient call list -a path=docs -a recursive=true
  opclient call list --args '{"path": "docs"}'
  opclient call upload -a path=notes.txt -a overwrite=true --in notes.txt
  tar c src | opclient call upload -a path=src.tar --in -
  opclient call download -a path=src.tar --out - | tar t
)");

  auto* describe = app.add_subcommand("describe", "List the operations you may call");
  describe->add_option("OP", cli.describe.operation, "Show one operation's arguments in detail");
  describe->add_flag("--json", cli.describe.json, "Print the server's JSON instead of a table");
  describe->footer(R"(
Examples:
  opclient describe
  opclient describe upload
  opclient describe --json
)");

  auto* upload =
      app.add_subcommand("upload", "Upload a file (its SHA-256 is checked by the server)");
  upload->add_option("LOCAL", cli.upload.local, "Local file (- = stdin)")->required();
  upload->add_option("REMOTE", cli.upload.remote,
                     "Remote path (default: LOCAL's name; ending in / means into that directory)");
  upload->add_flag("--overwrite", cli.upload.overwrite, "Replace an existing remote file");
  upload->add_flag("-r,--recursive", cli.upload.recursive,
                   "LOCAL is a directory: upload the whole tree into REMOTE");
  upload->add_flag("--resume", cli.upload.resume,
                   "Continue the open resumable upload to REMOTE from where the server is");
  upload
      ->add_option("--resumable-threshold", cli.upload.resumable_threshold,
                   "Files larger than this go resumable (bytes; K, M, G suffixes are KiB...)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  upload->add_option("--chunk", cli.upload.chunk, "Bytes per append of a resumable upload")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  upload->footer(R"(
With -r, every file below LOCAL goes to the same place below REMOTE (default: LOCAL's
name) on one connection, several at a time; empty directories are created too.
A file larger than --resumable-threshold (default 64 MiB) is sent as a resumable upload:
in appends of --chunk bytes (default 8 MiB), each one durable on the server before it is
acknowledged. If that is interrupted (Ctrl-C, a lost connection) the upload stays open on
the server, and the same command with --resume continues where the server stands.

Examples:
  opclient upload photo.jpg
  opclient upload photo.jpg albums/2024/
  opclient upload photo.jpg albums/cover.jpg --overwrite
  pg_dump db | opclient upload - backups/db.sql
  opclient upload disk.img images/disk.img --chunk 16M
  opclient upload --resume disk.img images/disk.img
  opclient upload -r photos/ albums/2024
)");

  auto* download = app.add_subcommand("download", "Download a file");
  download->add_option("REMOTE", cli.download.remote, "Remote path")->required();
  download->add_option("LOCAL", cli.download.local,
                       "Local file or directory (default: REMOTE's name; - = stdout)");
  download->add_flag("-c,--continue", cli.download.resume,
                     "Resume a partial LOCAL.part (or LOCAL) and verify the whole file's SHA-256");
  download->add_flag("--sha256", cli.download.sha256,
                     "Check the whole local file against the server's SHA-256 before keeping it");
  download->add_flag("-f,--force", cli.download.force, "Replace an existing LOCAL file");
  download->add_flag("-r,--recursive", cli.download.recursive,
                     "REMOTE is a directory: download the whole tree into LOCAL");
  download->footer(R"(
The file is written to LOCAL.part and renamed to LOCAL once complete. An existing LOCAL
is not replaced without --force (exit status 18). If the download is interrupted (Ctrl-C,
a lost connection) LOCAL.part is kept; --continue fetches the rest from its size and then
checks the whole file against the server's SHA-256 (as --sha256 does). A file whose
SHA-256 differs is left as LOCAL.part, nothing removed (exit status 6).
With -r, REMOTE's whole tree goes below LOCAL (default: REMOTE's name), on one
connection, several files at a time.

Examples:
  opclient download albums/cover.jpg
  opclient download albums/cover.jpg /tmp/
  opclient download backups/db.sql --continue
  opclient download albums/cover.jpg --force
  opclient download -r albums/2024 ./photos
  opclient download backups/db.sql - | psql db
)");

  auto* ls = app.add_subcommand("ls", "List a remote directory");
  ls->add_option("PATH", cli.ls.path, "Remote directory (default: your root)");
  ls->add_flag("-R,--recursive", cli.ls.recursive, "List subdirectories too");
  ls->add_flag("--json", cli.ls.json, "Print the server's JSON");
  ls->set_help_flag("--help", "Print this help message and exit");  // -h is ls -h
  ls->add_flag("-h,--human-readable", cli.ls.human, "Sizes in K, M, G (1024s, one decimal)");
  ls->add_option("--limit", cli.ls.limit, "Show one page of at most N entries")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 53));
  ls->add_option("--after", cli.ls.after,
                 "Start after this name (with -R: this relative path), e.g. a page's last");
  ls->footer(R"(
Each line: size (- for a directory), modification time, name (directories end in /).
Without --limit every page is fetched; with it, one page, and a note names the --after
value for the next one.

Examples:
  opclient ls
  opclient ls albums -R
  opclient ls -h albums/
  opclient ls --json | jq '.entries[].name'
  opclient ls big --limit 100 --after photo-0099.jpg
)");

  auto* reg = app.add_subcommand("register", "Create a user (admin); prints its new key once");
  reg->add_option("NAME", cli.reg.name, "New user name: [a-z_][a-z0-9_.-]{0,31}")->required();
  reg->add_option("--key-file-out", cli.reg.key_file_out,
                  "Write the key to this new file (mode 600) instead of stdout");
  reg->add_flag("--json", cli.reg.json, "Print the server's JSON result");
  reg->footer(R"(
Examples:
  opclient --user admin --key-file admin.key register bob > bob.key
  opclient --user admin register carol --key-file-out carol.key
)");

  auto* rm = app.add_subcommand("rm", "Remove a file or an empty directory (-r: a whole tree)");
  rm->add_option("PATH", cli.rm.path, "Remote path")->required();
  rm->add_flag("-r,-R,--recursive", cli.rm.recursive, "Remove a directory and everything in it");
  rm->footer(R"(
Prints the server's result; "removed" counts the files and directories removed.

Examples:
  opclient rm albums/old.jpg
  opclient rm albums/2019 -r
)");

  auto* mv = app.add_subcommand("mv", "Move or rename a file or directory (atomic)");
  mv->add_option("FROM", cli.mv.from, "Remote path to move")->required();
  mv->add_option("TO", cli.mv.to, "New remote path (missing parents are created)")->required();
  mv->add_flag("--overwrite", cli.mv.overwrite, "Let a file replace an existing file");
  mv->footer(R"(
Examples:
  opclient mv draft.txt docs/final.txt
  opclient mv new.jpg albums/cover.jpg --overwrite
)");

  auto* mkdir = app.add_subcommand("mkdir", "Create a remote directory (and missing parents)");
  mkdir->add_option("PATH", cli.mkdir.path, "Remote directory")->required();
  mkdir->add_flag("-p,--parents,!--no-parents", cli.mkdir.parents,
                  "Create missing parents (the default); --no-parents: fail instead");
  mkdir->footer(R"(
"created" is false when the directory was already there (not an error).

Examples:
  opclient mkdir albums/2025/summer
  opclient mkdir albums/2026 --no-parents
)");

  auto* stat = app.add_subcommand("stat", "Show one remote file or directory");
  stat->add_option("PATH", cli.stat.path, "Remote path (default: your root)");
  stat->add_flag("--sha256", cli.stat.sha256, "Add the file's SHA-256 (the server reads it all)");
  stat->footer(R"(
Examples:
  opclient stat albums/cover.jpg --sha256
  opclient stat albums
)");

  auto* usage = app.add_subcommand("usage", "Show your stored bytes and files and your quotas");
  usage->add_flag("--json", cli.usage.json, "Print the server's JSON result");
  usage->footer(R"(
Examples:
  opclient usage
  opclient usage --json | jq .bytes
)");

  auto* set_quota = app.add_subcommand("set-quota", "Set or clear a user's quotas (admin)");
  set_quota->alias("quota");
  set_quota->add_option("USER", cli.set_quota.user, "The user")->required();
  set_quota->add_option("--bytes", cli.set_quota.bytes,
                        "Byte quota: a count, or none for no limit (default: unchanged)");
  set_quota->add_option("--files", cli.set_quota.files,
                        "File quota: a count, or none for no limit (default: unchanged)");
  set_quota->add_flag("--json", cli.set_quota.json, "Print the server's JSON result");
  set_quota->footer(R"(
A quota below what the user already stores removes nothing; it refuses growth.

Examples:
  opclient --user admin set-quota bob --bytes 10737418240 --files 100000
  opclient --user admin set-quota bob --bytes none
)");

  auto* unregister = app.add_subcommand(
      "unregister", "Remove a user, its key, its connections and its files (admin)");
  unregister->add_option("USER", cli.unregister.user, "The user")->required();
  unregister->add_flag("--json", cli.unregister.json, "Print the server's JSON result");
  unregister->footer(R"(
Examples:
  opclient --user admin unregister bob
)");

  auto* rekey =
      app.add_subcommand("rekey", "Give a user (by default you) a new key; prints it once");
  rekey->add_option("USER", cli.rekey.user, "The user (default: you; others: admin)");
  rekey->add_option("--key-file-out", cli.rekey.key_file_out,
                    "Write the key to this new file (mode 600) instead of stdout");
  rekey->add_flag("--json", cli.rekey.json, "Print the server's JSON result");
  rekey->footer(R"(
Your other connections are closed; this one is not. The old key stops working at once.

Examples:
  opclient rekey --key-file-out new.key && mv new.key my.key
  opclient --user admin rekey bob > bob.key
)");

  for (auto* sub : {call, describe, upload, download, ls, reg, rm, mv, mkdir, stat, usage,
                    set_quota, unregister, rekey}) {
    sub->footer(sub->get_footer() +
                "\nConnection options (--server, --user, --key-file, --timeout, --quiet, -v), TLS\n"
                "options (--tls, --ca, --cert, --key, --insecure-no-binding) and\n"
                "exit statuses: see opclient --help.\n");
    sub->callback([&chosen, sub] { chosen = sub->get_name(); });
  }
}

// "docs/" as ls prints it means "docs" in every command. upload's REMOTE keeps its slash:
// there it says "into this directory".
void normalize_remote_paths(Cli& cli) {
  cli.download.remote = trim_trailing_slashes(cli.download.remote);
  cli.ls.path = directory_path(cli.ls.path);
  cli.stat.path = directory_path(cli.stat.path);
  cli.rm.path = trim_trailing_slashes(cli.rm.path);
  cli.mv.from = trim_trailing_slashes(cli.mv.from);
  cli.mv.to = trim_trailing_slashes(cli.mv.to);
  cli.mkdir.path = trim_trailing_slashes(cli.mkdir.path);
}

int dispatch(const Cli& cli, const std::string& chosen) {
  if (chosen == "call") return run_call(cli.conn, cli.call);
  if (chosen == "describe") return run_describe(cli.conn, cli.describe);
  if (chosen == "upload") return run_upload(cli.conn, cli.upload);
  if (chosen == "download") return run_download(cli.conn, cli.download);
  if (chosen == "ls") return run_ls(cli.conn, cli.ls);
  if (chosen == "register") return run_register(cli.conn, cli.reg);
  if (chosen == "rm") return run_rm(cli.conn, cli.rm);
  if (chosen == "mv") return run_mv(cli.conn, cli.mv);
  if (chosen == "mkdir") return run_mkdir(cli.conn, cli.mkdir);
  if (chosen == "stat") return run_stat(cli.conn, cli.stat);
  if (chosen == "usage") return run_usage(cli.conn, cli.usage);
  if (chosen == "set-quota") return run_set_quota(cli.conn, cli.set_quota);
  if (chosen == "unregister") return run_unregister(cli.conn, cli.unregister);
  if (chosen == "rekey") return run_rekey(cli.conn, cli.rekey);
  return exit_code::kUsage;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"opclient: call operations on an opserver (OPS/1)", "opclient"};
  app.set_version_flag("--version", std::string("opclient ") + OPS_VERSION + " (OPS/1)");
  app.require_subcommand(1);
  app.fallthrough();  // connection options are accepted after the command too
  app.get_formatter()->column_width(34);
  app.footer(std::string(kMainFooter) + kExitTable);

  Cli cli;
  std::string chosen;
  add_connection_options(app, cli);
  add_commands(app, cli, chosen);

  // Before CLI11, which would only say "A subcommand is required" for a typo.
  std::vector<std::string> commands;
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    commands.push_back(sub->get_name());
    for (const std::string& alias : sub->get_aliases()) commands.push_back(alias);
  }
  if (auto word = unknown_command(argc, argv, commands, kOptionsWithValue)) {
    std::fprintf(stderr, "opclient: %s\n", unknown_command_message(*word, commands).c_str());
    return exit_code::kUsage;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the error and a hint
    return code == 0 ? exit_code::kOk : exit_code::kUsage;
  }
  normalize_remote_paths(cli);
  install_signal_cleanup();
  return dispatch(cli, chosen);
}
