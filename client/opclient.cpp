// opclient: the generic OPS/1 client. Flags and help only; the verbs live in
// *_command(s).cpp and all protocol work in the SDK's client library.
#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "local_files.hpp"

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
  opclient call list -a path=docs -a recursive=true

)";

struct Cli {
  ConnectionFlags conn;
  CallFlags call;
  DescribeFlags describe;
  UploadFlags upload;
  DownloadFlags download;
  LsFlags ls;
  RegisterFlags reg;
  UsageFlags usage;
  SetQuotaFlags set_quota;
  UnregisterFlags unregister;
  RekeyFlags rekey;
};

void add_connection_options(CLI::App& app, Cli& cli) {
  app.add_option("-s,--server", cli.conn.server, "Server address HOST:PORT or [IPv6]:PORT")
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
  app.add_option("--timeout", cli.conn.timeout_seconds,
                 "Seconds to wait for connect or any progress")
      ->capture_default_str()
      ->group("Connection");
  app.add_flag("-q,--quiet", cli.conn.output.quiet, "No progress bar and no notes on stderr")
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
  upload->footer(R"(
Examples:
  opclient upload photo.jpg
  opclient upload photo.jpg albums/2024/
  opclient upload photo.jpg albums/cover.jpg --overwrite
  pg_dump db | opclient upload - backups/db.sql
)");

  auto* download = app.add_subcommand("download", "Download a file");
  download->add_option("REMOTE", cli.download.remote, "Remote path")->required();
  download->add_option("LOCAL", cli.download.local,
                       "Local file or directory (default: REMOTE's name; - = stdout)");
  download->add_flag("-c,--continue", cli.download.resume,
                     "Resume a partial LOCAL.part (or LOCAL), and keep it if interrupted");
  download->footer(R"(
The file is written to LOCAL.part and renamed to LOCAL once complete.

Examples:
  opclient download albums/cover.jpg
  opclient download albums/cover.jpg /tmp/
  opclient download backups/db.sql --continue
  opclient download backups/db.sql - | psql db
)");

  auto* ls = app.add_subcommand("ls", "List a remote directory");
  ls->add_option("PATH", cli.ls.path, "Remote directory (default: your root)");
  ls->add_flag("-R,--recursive", cli.ls.recursive, "List subdirectories too");
  ls->add_flag("--json", cli.ls.json, "Print the server's JSON");
  ls->footer(R"(
Each line: size (- for a directory), modification time, name (directories end in /).

Examples:
  opclient ls
  opclient ls albums -R
  opclient ls --json | jq '.entries[].name'
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

  auto* usage = app.add_subcommand("usage", "Show your stored bytes and files and your quotas");
  usage->add_flag("--json", cli.usage.json, "Print the server's JSON result");
  usage->footer(R"(
Examples:
  opclient usage
  opclient usage --json | jq .bytes
)");

  auto* set_quota = app.add_subcommand("set-quota", "Set or clear a user's quotas (admin)");
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

  for (auto* sub :
       {call, describe, upload, download, ls, reg, usage, set_quota, unregister, rekey}) {
    sub->footer(sub->get_footer() +
                "\nConnection options (--server, --user, --key-file, --timeout, --quiet) and\n"
                "exit statuses: see opclient --help.\n");
    sub->callback([&chosen, sub] { chosen = sub->get_name(); });
  }
}

int dispatch(const Cli& cli, const std::string& chosen) {
  if (chosen == "call") return run_call(cli.conn, cli.call);
  if (chosen == "describe") return run_describe(cli.conn, cli.describe);
  if (chosen == "upload") return run_upload(cli.conn, cli.upload);
  if (chosen == "download") return run_download(cli.conn, cli.download);
  if (chosen == "ls") return run_ls(cli.conn, cli.ls);
  if (chosen == "register") return run_register(cli.conn, cli.reg);
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version, or the error and a hint
    return code == 0 ? exit_code::kOk : exit_code::kUsage;
  }
  install_signal_cleanup();
  return dispatch(cli, chosen);
}
