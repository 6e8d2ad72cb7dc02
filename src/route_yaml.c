/*-------------------------------------------------------------------------
 *
 * route_yaml.c
 *	  Parse an ISM routing YAML (messageConfig.routes[]) with libyaml.
 *
 * libyaml's document API resolves anchors and aliases into a node graph
 * and keeps every node's position, so each error can name its line and
 * column.  Scalars are typed by the YAML 1.1 rules PyYAML's safe_load
 * applies (the upstream router reads the file with it); "<<" merge keys
 * work as there.  Limits on size, depth, node visits, keys collected and
 * JSON made keep a hostile document (an alias bomb, say) from costing more
 * than a clear error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <yaml.h>

#include "utils/builtins.h"
#include "utils/json.h"

#include "route_yaml.h"
#include "route_spec.h"

/*
 * PostgreSQL 18 replaced pg_attribute_noreturn(), written after a
 * function's declarator, with pg_noreturn, written before its declaration
 * (C11 _Noreturn where there is one).  GCC takes its attribute there too.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/* Larger than any real routing file by orders of magnitude. */
#define ROUTING_MAX_BYTES	(16 * 1024 * 1024)
#define ROUTING_MAX_ROUTES	100000
#define ROUTING_MAX_DEPTH	64
/*
 * Alias expansion is bounded three ways: by the nodes visited while typing
 * values, by the key-value pairs collected (a "<<" merge of an aliased
 * mapping costs one visit, but all its keys: 40 for each of the most
 * routes), and by the bytes of JSON made of the values.
 */
#define ROUTING_MAX_VISITS	1000000
#define ROUTING_MAX_PAIRS	(40 * ROUTING_MAX_ROUTES)
#define ROUTING_MAX_JSON_BYTES	(4 * ROUTING_MAX_BYTES)

typedef struct YamlDoc
{
	yaml_document_t doc;
	long		visits_left;
	long		pairs_left;
	long		json_bytes_left;
	List	   *specs;			/* the routes parsed so far */
} YamlDoc;

/* A key of a mapping, after "<<" merges. */
typedef struct YamlPair
{
	const char *key;
	yaml_node_t *key_node;
	yaml_node_t *value;
} YamlPair;

static void yaml_node_to_json(YamlDoc *yd, yaml_node_t *node, int depth,
							  StringInfo out);

pg_noreturn static void
yaml_fail_at(int line, int column, const char *message)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid routing YAML at line %d, column %d: %s",
					line, column, message)));
}

pg_noreturn static void
yaml_fail(yaml_node_t *node, const char *message)
{
	yaml_fail_at((int) node->start_mark.line + 1,
				 (int) node->start_mark.column + 1, message);
}

static const char *
node_kind(yaml_node_t *node)
{
	switch (node->type)
	{
		case YAML_MAPPING_NODE:
			return "a mapping";
		case YAML_SEQUENCE_NODE:
			return "a list";
		default:
			return "a scalar";
	}
}

static const char *
scalar_text(yaml_node_t *node)
{
	return (const char *) node->data.scalar.value;
}

static bool
is_plain(yaml_node_t *node)
{
	return node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool
text_in(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(s, *set) == 0)
			return true;
	return false;
}

static bool
looks_like_int(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!isdigit((unsigned char) *s))
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char) *s) && *s != '_')
			return false;
	return true;
}

static int64
parse_int(const char *s)
{
	bool		negative = (*s == '-');
	int64		v = 0;

	if (*s == '-' || *s == '+')
		s++;
	for (; *s; s++)
	{
		if (*s == '_')
			continue;
		/* saturate: the range check then reports it */
		if (v > (PG_INT64_MAX - 9) / 10)
			return negative ? PG_INT64_MIN : PG_INT64_MAX;
		v = v * 10 + (*s - '0');
	}
	return negative ? -v : v;
}

static bool
looks_like_float(const char *s)
{
	char	   *end;
	bool		has_digit = false;

	for (const char *p = s; *p; p++)
		if (isdigit((unsigned char) *p))
			has_digit = true;
	if (!has_digit)
		return false;
	errno = 0;
	(void) strtod(s, &end);
	return *end == '\0' && errno == 0;
}

/*
 * Type a scalar as PyYAML's safe_load would (YAML 1.1 core types), leaving
 * v->json unset (append_scalar_json makes it).
 */
static void
classify_scalar(yaml_node_t *node, RouteValue *v)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	static const char *const trues[] = {"true", "True", "TRUE", "yes", "Yes",
	"YES", "on", "On", "ON", NULL};
	static const char *const falses[] = {"false", "False", "FALSE", "no", "No",
	"NO", "off", "Off", "OFF", NULL};
	const char *s = scalar_text(node);

	memset(v, 0, sizeof(*v));
	v->text = s;
	v->kind = RV_STRING;
	if (is_plain(node))
	{
		if (text_in(s, nulls))
			v->kind = RV_NULL;
		else if (text_in(s, trues) || text_in(s, falses))
		{
			v->kind = RV_BOOL;
			v->boolean = text_in(s, trues);
		}
		else if (looks_like_int(s))
		{
			v->kind = RV_INT;
			v->integer = parse_int(s);
		}
		else if (looks_like_float(s))
			v->kind = RV_FLOAT;
	}
}

/* A scalar typed by classify_scalar, as JSON. */
static void
append_scalar_json(StringInfo out, const RouteValue *v)
{
	switch (v->kind)
	{
		case RV_NULL:
			appendStringInfoString(out, "null");
			break;
		case RV_BOOL:
			appendStringInfoString(out, v->boolean ? "true" : "false");
			break;
		case RV_INT:
			appendStringInfo(out, INT64_FORMAT, v->integer);
			break;
		case RV_FLOAT:
			{
				double		d = strtod(v->text, NULL);

				if (isfinite(d))
					appendStringInfo(out, "%.17g", d);
				else
					escape_json(out, v->text);
				break;
			}
		default:
			escape_json(out, v->text);
			break;
	}
}

/* A scalar typed, with its JSON in memory of its size. */
static void
type_scalar(yaml_node_t *node, RouteValue *v)
{
	StringInfoData json;

	classify_scalar(node, v);
	initStringInfo(&json);
	append_scalar_json(&json, v);
	v->json = pstrdup(json.data);
	pfree(json.data);
}

#define TOO_COMPLEX "document too complex (too many nodes, or aliases expanding too far)"

static void
spend_visit(YamlDoc *yd, yaml_node_t *node, int depth)
{
	if (--yd->visits_left < 0)
		yaml_fail(node, TOO_COMPLEX);
	if (depth > ROUTING_MAX_DEPTH)
		yaml_fail(node, psprintf("nested deeper than %d levels", ROUTING_MAX_DEPTH));
}

static void
spend_pair(YamlDoc *yd, yaml_node_t *node)
{
	if (--yd->pairs_left < 0)
		yaml_fail(node, TOO_COMPLEX);
}

static void
spend_json_bytes(YamlDoc *yd, yaml_node_t *node, int bytes)
{
	yd->json_bytes_left -= bytes;
	if (yd->json_bytes_left < 0)
		yaml_fail(node, TOO_COMPLEX);
}

/* A pair of a mapping, and its place among the mapping's pairs. */
typedef struct PlacedPair
{
	YamlPair   *pair;
	int			place;
} PlacedPair;

static int
compare_placed_pairs(const void *a, const void *b)
{
	const PlacedPair *pa = a;
	const PlacedPair *pb = b;
	int			c = strcmp(pa->pair->key, pb->pair->key);

	return c != 0 ? c : pa->place - pb->place;
}

/*
 * pairs[0..n) sorted by key, then place: a key's first place starts its
 * run.  Sorting, not comparing every key with every other, keeps a mapping
 * of many keys from costing their number squared.
 */
static PlacedPair *
sort_pairs(YamlPair **pairs, int n)
{
	PlacedPair *sorted = palloc(sizeof(PlacedPair) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		sorted[i].pair = pairs[i];
		sorted[i].place = i;
	}
	qsort(sorted, n, sizeof(PlacedPair), compare_placed_pairs);
	return sorted;
}

/*
 * Collect the pairs of a mapping into *pairs (empty on entry): its own keys
 * first, then those of "<<" merges that it does not set itself (of a key
 * several merges set, the first one's).
 */
static void
collect_pairs(YamlDoc *yd, yaml_node_t *map, int depth, List **pairs)
{
	int			npairs = map->data.mapping.pairs.top - map->data.mapping.pairs.start;
	YamlPair  **candidates = palloc(sizeof(YamlPair *) * Max(npairs, 1));
	int			nown = 0;
	yaml_node_t *bad_key = NULL;	/* the first key that is not a string */
	List	   *merges = NIL;
	PlacedPair *sorted;
	int			run = 0;
	int			repeat = -1;
	int			repeat_first = -1;

	spend_visit(yd, map, depth);
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
		 p < map->data.mapping.pairs.top; p++)
	{
		yaml_node_t *k = yaml_document_get_node(&yd->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(&yd->doc, p->value);
		YamlPair   *pair;

		if (k->type != YAML_SCALAR_NODE)
		{
			bad_key = k;
			break;
		}
		if (strcmp(scalar_text(k), "<<") == 0 && is_plain(k))
		{
			merges = lappend(merges, v);
			continue;
		}
		spend_pair(yd, k);
		pair = palloc(sizeof(YamlPair));
		pair->key = scalar_text(k);
		pair->key_node = k;
		pair->value = v;
		candidates[nown++] = pair;
	}

	/* of the own keys before any error, the first given twice */
	sorted = sort_pairs(candidates, nown);
	for (int i = 1; i < nown; i++)
	{
		if (strcmp(sorted[run].pair->key, sorted[i].pair->key) != 0)
			run = i;
		else if (repeat < 0 || sorted[i].place < sorted[repeat].place)
		{
			repeat = i;
			repeat_first = run;
		}
	}
	if (repeat >= 0)
		yaml_fail(sorted[repeat].pair->key_node,
				  psprintf("key \"%s\" appears twice in this mapping (also at line %d)",
						   sorted[repeat].pair->key,
						   (int) sorted[repeat_first].pair->key_node->start_mark.line + 1));
	if (bad_key)
		yaml_fail(bad_key, psprintf("keys must be strings, found %s", node_kind(bad_key)));
	pfree(sorted);
	for (int i = 0; i < nown; i++)
		*pairs = lappend(*pairs, candidates[i]);
	if (merges == NIL)
	{
		pfree(candidates);
		return;
	}

	/* merged keys fill in what the mapping does not say itself */
	{
		int			ncandidates = nown;
		int			space = Max(npairs, 1);
		bool	   *counts;
		ListCell   *lc;

		foreach(lc, merges)
		{
			yaml_node_t *m = lfirst(lc);
			List	   *sources = NIL;
			ListCell   *sc;

			if (m->type == YAML_MAPPING_NODE)
				sources = list_make1(m);
			else if (m->type == YAML_SEQUENCE_NODE)
			{
				for (yaml_node_item_t *i = m->data.sequence.items.start;
					 i < m->data.sequence.items.top; i++)
					sources = lappend(sources, yaml_document_get_node(&yd->doc, *i));
			}
			foreach(sc, sources)
			{
				yaml_node_t *src = lfirst(sc);
				List	   *merged = NIL;
				ListCell   *mc;

				if (src->type != YAML_MAPPING_NODE)
					yaml_fail(src, "\"<<\" merges mappings only");
				collect_pairs(yd, src, depth + 1, &merged);
				foreach(mc, merged)
				{
					if (ncandidates == space)
					{
						space *= 2;
						candidates = repalloc(candidates, sizeof(YamlPair *) * space);
					}
					candidates[ncandidates++] = lfirst(mc);
				}
			}
			if (sources == NIL)
				yaml_fail(m, "\"<<\" merges a mapping or a list of mappings");
		}

		/* the first place of each key counts: own keys, then merges in order */
		sorted = sort_pairs(candidates, ncandidates);
		counts = palloc0(sizeof(bool) * ncandidates);
		for (int i = 0; i < ncandidates; i++)
			if (i == 0 || strcmp(sorted[i - 1].pair->key, sorted[i].pair->key) != 0)
				counts[sorted[i].place] = true;
		for (int i = nown; i < ncandidates; i++)
		{
			if (!counts[i])
				continue;
			spend_pair(yd, candidates[i]->key_node);
			*pairs = lappend(*pairs, candidates[i]);
		}
		pfree(sorted);
		pfree(counts);
		pfree(candidates);
	}
}

static yaml_node_t *
pair_value(List *pairs, const char *key)
{
	ListCell   *lc;

	foreach(lc, pairs)
	{
		YamlPair   *p = lfirst(lc);

		if (strcmp(p->key, key) == 0)
			return p->value;
	}
	return NULL;
}

static void
yaml_node_to_json(YamlDoc *yd, yaml_node_t *node, int depth, StringInfo out)
{
	spend_visit(yd, node, depth);
	if (node->type == YAML_SCALAR_NODE)
	{
		RouteValue	v;
		int			start = out->len;

		classify_scalar(node, &v);
		append_scalar_json(out, &v);
		spend_json_bytes(yd, node, out->len - start);
	}
	else if (node->type == YAML_SEQUENCE_NODE)
	{
		appendStringInfoChar(out, '[');
		for (yaml_node_item_t *i = node->data.sequence.items.start;
			 i < node->data.sequence.items.top; i++)
		{
			if (i != node->data.sequence.items.start)
				appendStringInfoString(out, ", ");
			yaml_node_to_json(yd, yaml_document_get_node(&yd->doc, *i), depth + 1, out);
		}
		appendStringInfoChar(out, ']');
	}
	else
	{
		List	   *pairs = NIL;
		ListCell   *lc;

		collect_pairs(yd, node, depth, &pairs);
		appendStringInfoChar(out, '{');
		foreach(lc, pairs)
		{
			YamlPair   *p = lfirst(lc);
			int			start = out->len;

			if (lc != list_head(pairs))
				appendStringInfoString(out, ", ");
			escape_json(out, p->key);
			spend_json_bytes(yd, p->key_node, out->len - start);
			appendStringInfoString(out, ": ");
			yaml_node_to_json(yd, p->value, depth + 1, out);
		}
		appendStringInfoChar(out, '}');
	}
}

static void
yaml_value(YamlDoc *yd, yaml_node_t *node, RouteValue *v)
{
	StringInfoData json;

	if (node->type == YAML_SCALAR_NODE)
	{
		type_scalar(node, v);
		spend_json_bytes(yd, node, strlen(v->json));
		return;
	}
	memset(v, 0, sizeof(*v));
	v->kind = node->type == YAML_SEQUENCE_NODE ? RV_SEQUENCE : RV_MAPPING;
	initStringInfo(&json);
	yaml_node_to_json(yd, node, 1, &json);
	v->json = pstrdup(json.data);
	pfree(json.data);
}

static RouteSpec *
parse_route(YamlDoc *yd, yaml_node_t *entry, int number)
{
	RouteSpec  *spec = palloc(sizeof(RouteSpec));
	List	   *pairs = NIL;
	yaml_node_t *sel;
	char	   *label;
	const char *missing;
	char	   *error;
	ListCell   *lc;

	if (entry->type != YAML_MAPPING_NODE)
		yaml_fail(entry, psprintf("route entry %d must be a mapping, found %s",
								  number, node_kind(entry)));
	ism_route_spec_init(spec);
	spec->line = (int) entry->start_mark.line + 1;
	spec->column = (int) entry->start_mark.column + 1;
	collect_pairs(yd, entry, 1, &pairs);

	sel = pair_value(pairs, "selector");
	label = (sel && sel->type == YAML_SCALAR_NODE) ?
		psprintf("route entry %d (\"%s\")", number, scalar_text(sel)) :
		psprintf("route entry %d", number);

	foreach(lc, pairs)
	{
		YamlPair   *p = lfirst(lc);
		RouteValue	v;

		spend_json_bytes(yd, p->key_node, strlen(p->key));	/* a key kept in extra */
		yaml_value(yd, p->value, &v);
		if (!ism_route_spec_set(spec, p->key, &v, &error))
			yaml_fail(p->value, psprintf("%s, key \"%s\": %s", label, p->key, error));
	}
	if (!ism_route_spec_check(spec, true, &missing, &error))
		yaml_fail(entry, psprintf("%s: %s", label, error));
	return spec;
}

static int
compare_selectors(const void *a, const void *b)
{
	const RouteSpec *ra = *(RouteSpec *const *) a;
	const RouteSpec *rb = *(RouteSpec *const *) b;
	int			c = strcmp(ra->selector, rb->selector);

	return c != 0 ? c : ra->line - rb->line;
}

/* Sorted by selector, duplicates are neighbours. */
static void
check_unique_selectors(List *specs)
{
	int			n = list_length(specs);
	RouteSpec **sorted;
	int			i = 0;
	ListCell   *lc;

	if (n < 2)
		return;
	sorted = palloc(sizeof(RouteSpec *) * n);
	foreach(lc, specs)
		sorted[i++] = lfirst(lc);
	qsort(sorted, n, sizeof(RouteSpec *), compare_selectors);
	for (i = 1; i < n; i++)
		if (strcmp(sorted[i - 1]->selector, sorted[i]->selector) == 0)
			yaml_fail_at(sorted[i]->line, sorted[i]->column,
						 psprintf("duplicate selector \"%s\" (first at line %d)",
								  sorted[i]->selector, sorted[i - 1]->line));
	pfree(sorted);
}

/*
 * A messageConfig without routes loads nothing, as upstream: ismcore's
 * Router builds its table only "if 'routes' in message_config"
 * (base_message_router.py create_routing_table), and every lookup then
 * fails.  Such files exist: the state router's Pulsar-era routing.yaml
 * (root_route, topic_routes).  A warning names the keys found instead.
 */
static void
warn_no_routes(yaml_node_t *config, List *pairs)
{
	StringInfoData keys;
	ListCell   *lc;

	initStringInfo(&keys);
	foreach(lc, pairs)
		appendStringInfo(&keys, "%s\"%s\"", keys.len ? ", " : "",
						 ((YamlPair *) lfirst(lc))->key);
	ereport(WARNING,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("routing YAML at line %d has no \"messageConfig.routes\": no routes loaded",
					(int) config->start_mark.line + 1),
			 keys.len ? errdetail("\"messageConfig\" has %s.", keys.data) :
			 errdetail("\"messageConfig\" is empty."),
			 errhint("Routes are a list under \"messageConfig.routes\"; neither upstream loader reads other keys.")));
}

static void
parse_document(YamlDoc *yd)
{
	yaml_node_t *root = yaml_document_get_root_node(&yd->doc);
	List	   *pairs = NIL;
	yaml_node_t *config;
	yaml_node_t *routes;
	int			number = 0;

	if (root == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("routing YAML is empty"),
				 errhint("A routing file has the form \"messageConfig: {routes: [...]}\".")));
	if (root->type != YAML_MAPPING_NODE)
		yaml_fail(root, psprintf("expected a mapping with key \"messageConfig\", found %s",
								 node_kind(root)));
	collect_pairs(yd, root, 0, &pairs);
	config = pair_value(pairs, "messageConfig");
	if (config == NULL)
		yaml_fail(root, "key \"messageConfig\" is missing");
	if (config->type != YAML_MAPPING_NODE)
		yaml_fail(config, psprintf("\"messageConfig\" must be a mapping, found %s",
								   node_kind(config)));

	pairs = NIL;
	collect_pairs(yd, config, 1, &pairs);
	routes = pair_value(pairs, "routes");
	if (routes == NULL)
	{
		warn_no_routes(config, pairs);
		return;
	}
	if (routes->type != YAML_SEQUENCE_NODE)
		yaml_fail(routes, psprintf("\"messageConfig.routes\" must be a list, found %s",
								   node_kind(routes)));

	for (yaml_node_item_t *i = routes->data.sequence.items.start;
		 i < routes->data.sequence.items.top; i++)
	{
		yaml_node_t *entry = yaml_document_get_node(&yd->doc, *i);

		if (++number > ROUTING_MAX_ROUTES)
			yaml_fail(entry, psprintf("more than %d routes", ROUTING_MAX_ROUTES));
		yd->specs = lappend(yd->specs, parse_route(yd, entry, number));
	}
	check_unique_selectors(yd->specs);
}

/*
 * libyaml reports what its reader refuses (bad UTF-8, a control character)
 * at a byte offset, with no mark: the line and column of that byte.
 */
pg_noreturn static void
reader_fail(yaml_parser_t *parser, const char *problem)
{
	const unsigned char *start = parser->input.string.start;
	const unsigned char *end = parser->input.string.end;
	const unsigned char *bad = start + Min(parser->problem_offset, (size_t) (end - start));
	int			line = 1;
	int			column = 1;

	for (const unsigned char *p = start; p < bad; p++)
	{
		if (*p == '\n' || (*p == '\r' && (p + 1 == end || p[1] != '\n')))
		{
			line++;
			column = 1;
		}
		else if ((*p & 0xC0) != 0x80)	/* not a UTF-8 continuation byte */
			column++;
	}
	if (parser->problem_value >= 0)
		problem = psprintf("%s (#x%02X)", problem, parser->problem_value);
	yaml_fail_at(line, column, problem);
}

pg_noreturn static void
parser_fail(yaml_parser_t *parser)
{
	const char *problem = parser->problem ? parser->problem : "cannot parse";

	if (parser->error == YAML_READER_ERROR)
		reader_fail(parser, problem);
	if (parser->context)
		yaml_fail_at((int) parser->problem_mark.line + 1,
					 (int) parser->problem_mark.column + 1,
					 psprintf("%s %s (line %d)", problem, parser->context,
							  (int) parser->context_mark.line + 1));
	yaml_fail_at((int) parser->problem_mark.line + 1,
				 (int) parser->problem_mark.column + 1, problem);
}

/* As PyYAML's safe_load: a second document is an error, not ignored. */
static void
check_single_document(yaml_parser_t *parser)
{
	yaml_document_t next;
	bool		more;

	if (!yaml_parser_load(parser, &next))
		parser_fail(parser);
	more = yaml_document_get_root_node(&next) != NULL;
	if (more)
	{
		yaml_mark_t mark = yaml_document_get_root_node(&next)->start_mark;

		yaml_document_delete(&next);
		yaml_fail_at((int) mark.line + 1, (int) mark.column + 1,
					 "expected one document, found another");
	}
	yaml_document_delete(&next);
}

/*
 * The routes of a routing YAML, as a List of RouteSpec, or an ERROR that
 * names the line, the column, the key and what is wrong.
 */
List *
ism_parse_routing_yaml(const char *yaml, size_t len)
{
	yaml_parser_t parser;
	YamlDoc		yd;
	volatile bool loaded = false;

	if (len > ROUTING_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("routing YAML is %zu bytes, more than the limit of %d",
						len, ROUTING_MAX_BYTES)));
	if (memchr(yaml, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("routing YAML contains a NUL byte")));

	yd.visits_left = ROUTING_MAX_VISITS;
	yd.pairs_left = ROUTING_MAX_PAIRS;
	yd.json_bytes_left = ROUTING_MAX_JSON_BYTES;
	yd.specs = NIL;
	if (!yaml_parser_initialize(&parser))
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("could not initialise the YAML parser")));
	PG_TRY();
	{
		yaml_parser_set_input_string(&parser, (const unsigned char *) yaml, len);
		if (!yaml_parser_load(&parser, &yd.doc))
			parser_fail(&parser);
		loaded = true;
		parse_document(&yd);
		check_single_document(&parser);
	}
	PG_FINALLY();
	{
		if (loaded)
			yaml_document_delete(&yd.doc);
		yaml_parser_delete(&parser);
	}
	PG_END_TRY();
	return yd.specs;
}
