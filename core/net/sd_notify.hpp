// Tells systemd how the server is doing (sd_notify(3)), for a unit with Type=notify:
// READY=1 once plugins are loaded and every listener is bound, RELOADING=1 while a
// configuration reload runs, STOPPING=1 when the graceful stop begins. Each call is a
// no-op when NOTIFY_SOCKET is unset (not started by systemd), and a failure to send is
// only logged: systemd's view of the service is never a reason to stop serving.
#pragma once

namespace ops::core {

// After start-up is complete, and again at the end of every reload (success or not).
void notify_ready();
// At the start of a reload; sends MONOTONIC_USEC too, as systemd 253+ requires for
// Type=notify-reload (older systemd ignores it). Follow it with notify_ready().
void notify_reloading();
// When the graceful stop begins.
void notify_stopping();

// False when built without libsystemd: then the calls above only warn (once) if
// NOTIFY_SOCKET is set.
bool notify_supported();

}  // namespace ops::core
