/* oms-staff: manages the gateway's staff accounts from a shell (gateway/staff_store.h).
 *
 *   oms-staff add NAME       creates an account; password from stdin
 *   oms-staff passwd NAME    sets a new password (and signs the account out everywhere)
 *   oms-staff remove NAME    deletes the account and its sessions
 *   oms-staff list           one line per account: name, created, password changed,
 *                            sessions (tab-separated, after a header line)
 *
 * The password is one line of stdin, its trailing newline (and a \r before it) removed,
 * 12..256 bytes: `printf '%s\n' "$PW" | oms-staff add alice`. When stdin is a terminal it
 * is asked for twice with echo off, and a signal while echo is off restores the terminal
 * first. DATABASE_URL names the gateway's database exactly as the gateway reads it
 * (default var/gateway.db, relative to the working directory; postgres://... for a
 * shared one). The hash cost is the gateway's default (staff_store.h).
 *
 * Exit status: 0 done, 1 error (one line on stderr), 2 usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "oms/log.h"
#include "oms/util.h"
#include "staff_store.h"

#define PROG "oms-staff"
#define DEFAULT_DB "var/gateway.db"
#define LINE_CAP (GW_STAFF_PASSWORD_MAX + 2) /* the longest password, "\r\n" */

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROG " add NAME | passwd NAME | remove NAME | list\n"
                 "  add and passwd read the password (12..256 bytes) as one line from stdin;\n"
                 "  on a terminal they ask twice, without echo.\n"
                 "  DATABASE_URL: the gateway's database (default " DEFAULT_DB ").\n"
                 "  exit status: 0 done, 1 error, 2 usage\n");
}

/* ---- reading the password ------------------------------------------------------------ */

static struct termios g_saved;
static volatile sig_atomic_t g_echo_off;

static void restore_echo(void)
{
    if (g_echo_off) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved); /* async-signal-safe */
        g_echo_off = 0;
    }
}

/* A signal while echo is off: give the terminal back, then die of the signal as usual. */
static void on_signal(int sig)
{
    restore_echo();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int echo_off(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &g_saved) != 0)
        return -1;
    for (size_t i = 0; i < OMS_NELEM(sigs); i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return -1;
    }
    t = g_saved;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
    g_echo_off = 1;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) {
        g_echo_off = 0;
        return -1;
    }
    return 0;
}

/* One line of stdin into out (LINE_CAP + 1 bytes) without its "\n" or "\r\n".
 * Returns 0, or -1 with why set (no line, too long, a NUL byte, a read error). A line
 * that is too long is read to its end, so nothing of it is left for another reader. */
static int read_line(char *out, const char **why)
{
    size_t n = 0;
    int c, nul = 0, any = 0;
    while ((c = getchar()) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (c == '\0')
            nul = 1;
        if (n < LINE_CAP)
            out[n] = (char)c;
        n++;
    }
    if (ferror(stdin)) {
        *why = "cannot read stdin";
        return -1;
    }
    if (!any) {
        *why = "no password on stdin (give it as one line)";
        return -1;
    }
    if (n > 0 && n <= LINE_CAP && out[n - 1] == '\r')
        n--;
    if (n > GW_STAFF_PASSWORD_MAX) {
        *why = "the password is longer than 256 bytes";
        return -1;
    }
    if (nul) {
        *why = "the password contains a NUL byte";
        return -1;
    }
    out[n] = '\0';
    return 0;
}

/* The password into pw (LINE_CAP + 1 bytes): asked twice on a terminal, else one line. */
static int read_password(const char *name, char *pw)
{
    const char *why = NULL;
    if (!isatty(STDIN_FILENO)) {
        if (read_line(pw, &why) != 0) {
            fprintf(stderr, PROG ": %s\n", why);
            return -1;
        }
        return 0;
    }
    char again[LINE_CAP + 1];
    int rc = -1;
    if (echo_off() != 0) {
        restore_echo();
        fprintf(stderr, PROG ": cannot turn the terminal's echo off; refusing to read a "
                             "password that would show (pipe it in instead)\n");
        return -1;
    }
    fprintf(stderr, "Password for %s: ", name);
    if (read_line(pw, &why) == 0) {
        fprintf(stderr, "\nAgain: ");
        if (read_line(again, &why) == 0) {
            if (strcmp(pw, again) == 0)
                rc = 0;
            else
                why = "the two passwords differ";
        }
    }
    restore_echo();
    fputc('\n', stderr);
    explicit_bzero(again, sizeof(again));
    if (rc != 0)
        fprintf(stderr, PROG ": %s\n", why);
    return rc;
}

/* ---- commands -------------------------------------------------------------------------- */

static int print_account(const gw_staff_info *info, void *ud)
{
    char created[32], updated[32];
    oms_format_rfc3339(info->created_ms, created);
    oms_format_rfc3339(info->updated_ms, updated);
    printf("%s\t%s\t%s\t%lld\n", info->name, created, updated, info->sessions);
    return OMS_OK;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (argc == 2 && (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    int is_list = strcmp(cmd, "list") == 0;
    int with_name =
        strcmp(cmd, "add") == 0 || strcmp(cmd, "passwd") == 0 || strcmp(cmd, "remove") == 0;
    if ((!is_list && !with_name) || argc != (is_list ? 2 : 3)) {
        usage(stderr);
        return 2;
    }
    const char *name = with_name ? argv[2] : NULL;
    oms_error err;
    oms_error_clear(&err);
    if (name && gw_staff_check_name(name, &err) != OMS_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }

    oms_log_init(PROG, OMS_LOG_WARN, 1); /* quiet: no "applied migration" lines */
    const char *url = getenv("DATABASE_URL");
    if (!url || !*url)
        url = DEFAULT_DB;
    char shown[512];
    oms_url_redact(url, shown, sizeof(shown));
    gw_staff_store *st = NULL;
    if (gw_staff_store_open(&st, url, NULL, &err) != OMS_OK) {
        fprintf(stderr, PROG ": cannot open the gateway database %s: %s\n", shown, err.msg);
        return 1;
    }

    int rc = OMS_OK;
    char pw[LINE_CAP + 1];
    pw[0] = '\0';
    if (is_list) {
        printf("NAME\tCREATED\tPASSWORD_CHANGED\tSESSIONS\n");
        rc = gw_staff_list(st, print_account, NULL, &err);
    } else if (strcmp(cmd, "remove") == 0) {
        rc = gw_staff_remove(st, name, &err);
        if (rc == OMS_OK)
            printf(PROG ": removed %s and its sessions (%s)\n", name, shown);
    } else {
        int add = strcmp(cmd, "add") == 0;
        if (read_password(name, pw) != 0) {
            gw_staff_store_close(st);
            return 1;
        }
        rc = add ? gw_staff_add(st, name, pw, &err) : gw_staff_passwd(st, name, pw, &err);
        explicit_bzero(pw, sizeof(pw));
        if (rc == OMS_OK && add)
            printf(PROG ": added %s (%s)\n", name, shown);
        else if (rc == OMS_OK)
            printf(PROG ": changed the password of %s and signed it out everywhere (%s)\n", name,
                   shown);
    }
    if (rc != OMS_OK)
        fprintf(stderr, PROG ": %s\n", err.msg);
    gw_staff_store_close(st);
    return rc == OMS_OK ? 0 : 1;
}
