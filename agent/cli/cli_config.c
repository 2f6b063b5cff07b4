/*
 * cli_config.c - `bgcopy config [--json]`: the bgcopy.conf settings in
 * effect, each with where it came from (default, FILE:LINE, command line),
 * and the files looked for; plus the config's peer key as the commands use
 * it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "cli_int.h"

#define VALUE_MAX (BG_CONFIG_PEERS_MAX * 300 + 4096)

/* "default", "FILE:LINE" or "command line". */
static const char *
source_text(const struct bg_conf_where *w, char *buf, size_t len)
{
	switch (w->source) {
	case BG_CONF_FILE:
		snprintf(buf, len, "%s:%u", w->file != NULL ? w->file : "?", w->line);
		return buf;
	case BG_CONF_OPTION:
		return "command line";
	default:
		return "default";
	}
}

int
cli_config_peer_key(struct ctx *c, bool fatal, const char **key)
{
	unsigned char k[PEER_KEY_MAX];
	char where[BG_CONFIG_PATH_MAX + 16];
	size_t len;
	int err;

	*key = c->conf.peer_key;
	if (*key == NULL)
		return EXIT_DONE;
	err = peer_key_load(*key, k, &len);
	OPENSSL_cleanse(k, sizeof(k));
	if (err == 0)
		return EXIT_DONE;
	source_text(&c->conf.where[BG_CONF_PEER_KEY], where, sizeof(where));
	cli_complain("%s%s: peer_key: cannot use %s: %s%s", fatal ? "" : "warning: ", where, *key,
	             err == BG_EINVAL    ? "it must hold 16 to 4096 bytes"
	             : err == BG_EUNSAFE ? "it must be a file only its owner can read (chmod 600)"
	                                 : bg_strerror(err),
	             fatal ? "" : "; no peer is asked");
	return fatal ? EXIT_USAGE : EXIT_DONE;
}

static bool
was_read(const struct bg_config *conf, const char *path)
{
	for (size_t i = 0; i < 3 && conf->files[i] != NULL; i++)
		if (strcmp(conf->files[i], path) == 0)
			return true;
	return false;
}

static json_t *
setting_json(const struct bg_config *conf, enum bg_conf_key k)
{
	const struct bg_conf_where *w = &conf->where[k];
	json_t *o = json_object(), *v;
	char buf[VALUE_MAX];

	if (o == NULL)
		return NULL;
	switch (k) {
	case BG_CONF_PEER:
		v = json_array();
		for (size_t i = 0; v != NULL && i < conf->npeers; i++)
			if (json_array_append_new(v, json_string(conf->peers[i])) != 0) {
				json_decref(v);
				v = NULL;
			}
		break;
	case BG_CONF_PORT:
		v = json_integer((json_int_t)conf->port);
		break;
	case BG_CONF_PARTIAL_WAIT_MAX:
		v = json_integer((json_int_t)conf->partial_wait_max);
		break;
	case BG_CONF_SERVE_CONNECTIONS_PER_PEER:
		v = json_integer((json_int_t)conf->serve_per_peer);
		break;
	case BG_CONF_FLEET_ORIGIN_MAX:
		v = json_integer((json_int_t)conf->fleet_origin_max);
		break;
	case BG_CONF_FLEET_TAKEOVERS:
		v = json_integer((json_int_t)conf->fleet_takeovers);
		break;
	case BG_CONF_SERVE_RATE:
		v = json_integer((json_int_t)conf->serve_rate);
		break;
	case BG_CONF_MAX_RATE:
		v = conf->max_rate > 0 ? json_integer((json_int_t)conf->max_rate) : json_null();
		break;
	case BG_CONF_MAX_RATE_SCHEDULE:
		v = conf->max_rate_schedule != NULL ? json_string(conf->max_rate_schedule)
		                                    : json_null();
		break;
	case BG_CONF_PEER_DNS:
	case BG_CONF_PEER_KEY:
		bg_config_value(conf, k, buf, sizeof(buf));
		v = buf[0] != '\0' ? json_string(buf) : json_null();
		break;
	default:
		v = json_string(bg_config_value(conf, k, buf, sizeof(buf)));
		break;
	}
	if (jset_str(o, "key", bg_config_key_name(k)) != 0 || jset(o, "value", v) != 0 ||
	    jset_str(o, "source", w->source == BG_CONF_FILE     ? "file"
	                          : w->source == BG_CONF_OPTION ? "option"
	                                                        : "default") != 0 ||
	    (w->source == BG_CONF_FILE &&
	     (jset_str(o, "file", w->file) != 0 || jset_int(o, "line", w->line) != 0))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int
print_json(const struct bg_config *conf, char paths[][BG_CONFIG_PATH_MAX], size_t npaths)
{
	json_t *doc = json_object(), *files = json_array(), *settings = json_array(), *f;
	int err = doc == NULL || files == NULL || settings == NULL ? BG_ENOMEM : 0;

	for (size_t i = 0; err == 0 && i < npaths; i++) {
		if ((f = json_object()) == NULL || jset_str(f, "path", paths[i]) != 0 ||
		    jset(f, "read", json_boolean(was_read(conf, paths[i]))) != 0 ||
		    json_array_append_new(files, f) != 0)
			err = BG_ENOMEM;
	}
	for (unsigned k = 0; err == 0 && k < BG_CONF_KEYS; k++) {
		if ((f = setting_json(conf, (enum bg_conf_key)k)) == NULL ||
		    json_array_append_new(settings, f) != 0)
			err = BG_ENOMEM;
	}
	if (err == 0 && (json_object_set(doc, "files", files) != 0 ||
	                 json_object_set(doc, "settings", settings) != 0))
		err = BG_ENOMEM;
	if (err == 0)
		cli_print_json(doc);
	json_decref(files);
	json_decref(settings);
	json_decref(doc);
	return err != 0 ? cli_store_failed("config", err) : EXIT_DONE;
}

static void
print_text(const struct bg_config *conf, char paths[][BG_CONFIG_PATH_MAX], size_t npaths)
{
	char value[VALUE_MAX], src[BG_CONFIG_PATH_MAX + 16];
	const char *env = getenv("BGCOPY_CONFIG");
	int kw = (int)strlen("KEY"), vw = (int)strlen("VALUE"), fw = (int)strlen("FILE");

	/* The files first: a value's source is easier to read knowing them. */
	if (npaths == 0) {
		printf("no file read ($BGCOPY_CONFIG is empty)\n\n");
	} else {
		for (size_t i = 0; i < npaths; i++)
			if ((int)strlen(paths[i]) > fw)
				fw = (int)strlen(paths[i]);
		printf("%-*s  %s\n", fw, "FILE", env != NULL ? "STATUS ($BGCOPY_CONFIG)" : "STATUS");
		for (size_t i = 0; i < npaths; i++)
			printf("%-*s  %s\n", fw, paths[i], was_read(conf, paths[i]) ? "read" : "absent");
		printf("\n");
	}
	/* Columns as wide as their widest cell; one line per peer. */
	for (unsigned k = 0; k < BG_CONF_KEYS; k++) {
		int n = (int)strlen(bg_config_key_name((enum bg_conf_key)k));

		kw = n > kw ? n : kw;
		if (k == BG_CONF_PEER) {
			for (size_t i = 0; i < conf->npeers; i++)
				if ((int)strlen(conf->peers[i]) > vw)
					vw = (int)strlen(conf->peers[i]);
		} else if ((n = (int)strlen(bg_config_value(conf, (enum bg_conf_key)k, value,
		                                             sizeof(value)))) > vw) {
			vw = n;
		}
	}
	if (vw < (int)strlen("(none)"))
		vw = (int)strlen("(none)");
	printf("%-*s  %-*s  %s\n", kw, "KEY", vw, "VALUE", "SOURCE");
	for (unsigned k = 0; k < BG_CONF_KEYS; k++) {
		enum bg_conf_key key = (enum bg_conf_key)k;
		const char *s = source_text(&conf->where[k], src, sizeof(src));

		if (key == BG_CONF_PEER && conf->npeers > 0) {
			printf("%-*s  %-*s  %s\n", kw, "peer", vw, conf->peers[0], s);
			for (size_t i = 1; i < conf->npeers; i++)
				printf("%-*s  %s\n", kw, "", conf->peers[i]);
			continue;
		}
		bg_config_value(conf, key, value, sizeof(value));
		printf("%-*s  %-*s  %s\n", kw, bg_config_key_name(key), vw,
		       value[0] != '\0' ? value : "(none)", s);
	}
}

int
cmd_config(struct ctx *c, int argc, char **argv)
{
	char paths[2][BG_CONFIG_PATH_MAX];
	bool json = cli_take_flag(&argc, argv, "--json");
	size_t npaths;

	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: bgcopy config [--json]\n"
		       "\n"
		       "Shows every bgcopy.conf setting in effect and where it came from (default,\n"
		       "FILE:LINE, command line), and the files looked for.\n");
		return EXIT_DONE;
	}
	if (argc != 1) {
		cli_complain("usage: bgcopy config [--json]");
		return EXIT_USAGE;
	}
	/* The same list bg_config_load read (cli_run loaded c->conf from it). */
	npaths = bg_config_paths(paths, 2);
	if (json)
		return print_json(&c->conf, paths, npaths);
	print_text(&c->conf, paths, npaths);
	return EXIT_DONE;
}
