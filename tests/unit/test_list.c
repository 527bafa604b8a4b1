/* Image list and categories parser: the development-kit formats and their
 * edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "mp_list.h"

static FILE *text(const char *s)
{
	FILE *f = fmemopen((void *)s, strlen(s), "r");
	assert_non_null(f);
	return f;
}

static void train_list(void **state)
{
	(void)state;
	FILE *f = text("train/a/abbey/00000001.jpg 0\ntrain/a/abbey/00000002.jpg 0\n"
		       "train/b/bar/00000001.jpg 7\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "train.txt", 100, &l, &e), 0);
	assert_int_equal(l.count, 3);
	assert_true(l.labelled);
	assert_string_equal(l.items[2].path, "train/b/bar/00000001.jpg");
	assert_int_equal(l.items[2].label, 7);
	assert_int_equal(l.items[2].line, 3);
	assert_int_equal(l.max_label, 7);
	mp_list_free(&l);
	fclose(f);
}

static void comments_blank_crlf_spaces(void **state)
{
	(void)state;
	FILE *f = text("# header comment\r\n\r\n  my dir/img 1.jpg   3 \r\n\t\n"
		       "plain.jpg\t4\r\n# trailing\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "l.txt", 0, &l, &e), 0);
	assert_int_equal(l.count, 2);
	assert_string_equal(l.items[0].path, "my dir/img 1.jpg");
	assert_int_equal(l.items[0].label, 3);
	assert_int_equal(l.items[0].line, 3);
	assert_string_equal(l.items[1].path, "plain.jpg");
	assert_int_equal(l.items[1].label, 4);
	assert_int_equal(l.items[1].line, 5);
	mp_list_free(&l);
	fclose(f);
}

static void utf8_bom_ignored(void **state)
{
	(void)state;
	/* as Windows editors save UTF-8: the BOM starts the first line only */
	const char *lists[] = {"\xef\xbb\xbf" "a.jpg 1\r\nb.jpg 2\r\n",
			       "\xef\xbb\xbf" "# comment\na.jpg 1\nb.jpg 2\n"};
	for (int i = 0; i < 2; i++) {
		FILE *f = text(lists[i]);
		mp_list l;
		mp_error e;
		assert_int_equal(mp_list_read(f, "l.txt", 0, &l, &e), 0);
		assert_int_equal(l.count, 2);
		assert_string_equal(l.items[0].path, "a.jpg");
		assert_int_equal(l.items[0].label, 1);
		mp_list_free(&l);
		fclose(f);
	}
	/* elsewhere it is part of the text */
	FILE *f = text("a.jpg 1\n\xef\xbb\xbf" "b.jpg 2\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "l.txt", 0, &l, &e), 0);
	assert_string_equal(l.items[1].path, "\xef\xbb\xbf" "b.jpg");
	mp_list_free(&l);
	fclose(f);
	f = text("\xef\xbb\xbf/a/abbey 0\n/b/beach 1\n");
	char **names;
	int n;
	assert_int_equal(mp_categories_read(f, "categories.txt", &names, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "/a/abbey");
	mp_categories_free(names, n);
	fclose(f);
}

static void test_list_without_labels(void **state)
{
	(void)state;
	FILE *f = text("test/00000001.jpg\ntest/00000002.jpg\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "test.txt", 100, &l, &e), 0);
	assert_int_equal(l.count, 2);
	assert_false(l.labelled);
	assert_int_equal(l.items[0].label, MP_NO_LABEL);
	mp_list_free(&l);
	fclose(f);
}

static void label_out_of_range_names_line(void **state)
{
	(void)state;
	FILE *f = text("a.jpg 1\nb.jpg 2\n\nc.jpg 100\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "val.txt", 100, &l, &e), -1);
	assert_non_null(strstr(e.msg, "val.txt line 4"));
	assert_non_null(strstr(e.msg, "100"));
	fclose(f);
	f = text("a.jpg -1\n");
	assert_int_equal(mp_list_read(f, "val.txt", 0, &l, &e), -1);
	assert_non_null(strstr(e.msg, "line 1"));
	fclose(f);
	f = text("a.jpg 99999999999999999999999\n");
	assert_int_equal(mp_list_read(f, "val.txt", 0, &l, &e), -1);
	fclose(f);
}

static void mixed_labels_rejected(void **state)
{
	(void)state;
	FILE *f = text("a.jpg 1\nb.jpg\n");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "m.txt", 10, &l, &e), -1);
	assert_non_null(strstr(e.msg, "m.txt line 2"));
	fclose(f);
}

static void nul_byte_rejected(void **state)
{
	(void)state;
	static const char data[] = "a.jpg 1\nb\0c.jpg 2\n";
	FILE *f = fmemopen((void *)data, sizeof data - 1, "r");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "n.txt", 10, &l, &e), -1);
	assert_non_null(strstr(e.msg, "line 2"));
	fclose(f);
}

static void shuffle_is_seeded_permutation(void **state)
{
	(void)state;
	char buf[4096] = "";
	for (int i = 0; i < 50; i++) {
		char line[32];
		snprintf(line, sizeof line, "img%02d.jpg %d\n", i, i % 5);
		strcat(buf, line);
	}
	mp_list a, b, c;
	mp_error e;
	FILE *f = text(buf);
	assert_int_equal(mp_list_read(f, "s", 5, &a, &e), 0);
	fclose(f);
	f = text(buf);
	assert_int_equal(mp_list_read(f, "s", 5, &b, &e), 0);
	fclose(f);
	f = text(buf);
	assert_int_equal(mp_list_read(f, "s", 5, &c, &e), 0);
	fclose(f);
	mp_list_shuffle(&a, 7);
	mp_list_shuffle(&b, 7);
	mp_list_shuffle(&c, 8);
	int same_c = 1, seen[50] = {0};
	for (int i = 0; i < 50; i++) {
		assert_string_equal(a.items[i].path, b.items[i].path);
		if (strcmp(a.items[i].path, c.items[i].path))
			same_c = 0;
		int n;
		assert_int_equal(sscanf(a.items[i].path, "img%d.jpg", &n), 1);
		assert_int_equal(a.items[i].label, n % 5);
		seen[n]++;
	}
	assert_false(same_c);
	for (int i = 0; i < 50; i++)
		assert_int_equal(seen[i], 1);
	mp_list_free(&a);
	mp_list_free(&b);
	mp_list_free(&c);
}

static void utf16_and_cr_line_ends_named(void **state)
{
	(void)state;
	static const char utf16[] = "\xff\xfe" "a\0.\0j\0p\0g\0 \0" "1\0\n\0";
	FILE *f = fmemopen((void *)utf16, sizeof utf16 - 1, "r");
	mp_list l;
	mp_error e;
	assert_int_equal(mp_list_read(f, "u.txt", 10, &l, &e), -1);
	assert_string_equal(e.msg,
			    "u.txt line 1: starts with a UTF-16 byte order mark: save the file as UTF-8");
	fclose(f);
	f = text("a.jpg 0\rb.jpg 1\rc.jpg 2\r");
	assert_int_equal(mp_list_read(f, "mac.txt", 10, &l, &e), -1);
	assert_non_null(strstr(e.msg, "mac.txt line 1: has a carriage return inside it"));
	fclose(f);
	char **names;
	int n;
	f = text("/a/abbey 0\r/b/bar 1\r");
	assert_int_equal(mp_categories_read(f, "categories.txt", &names, &n, &e), -1);
	assert_non_null(strstr(e.msg, "categories.txt line 1: has a carriage return"));
	fclose(f);
	/* CR LF, and a CR before the end, are line ends */
	f = text("a.jpg 0\r\nb.jpg 1\r\r \n");
	assert_int_equal(mp_list_read(f, "dos.txt", 10, &l, &e), 0);
	assert_int_equal(l.count, 2);
	mp_list_free(&l);
	fclose(f);
}

static void categories(void **state)
{
	(void)state;
	FILE *f = text("/a/abbey 0\r\n/a/airport_terminal 1\n# c\n/b/bar 2\n");
	char **names;
	int n;
	mp_error e;
	assert_int_equal(mp_categories_read(f, "categories.txt", &names, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_string_equal(names[0], "/a/abbey");
	assert_string_equal(names[2], "/b/bar");
	mp_categories_free(names, n);
	fclose(f);
}

static void categories_gaps_and_duplicates(void **state)
{
	(void)state;
	char **names;
	int n;
	mp_error e;
	FILE *f = text("/a/abbey 0\n/b/bar 2\n");
	assert_int_equal(mp_categories_read(f, "c.txt", &names, &n, &e), -1);
	assert_non_null(strstr(e.msg, "class index 1 is missing"));
	fclose(f);
	f = text("/a/abbey 0\n/b/bar 0\n");
	assert_int_equal(mp_categories_read(f, "c.txt", &names, &n, &e), -1);
	assert_non_null(strstr(e.msg, "c.txt line 2"));
	fclose(f);
	f = text("/a/abbey\n");
	assert_int_equal(mp_categories_read(f, "c.txt", &names, &n, &e), -1);
	assert_non_null(strstr(e.msg, "c.txt line 1"));
	fclose(f);
	f = text("\n# nothing\n");
	assert_int_equal(mp_categories_read(f, "c.txt", &names, &n, &e), -1);
	fclose(f);
	/* one name for two classes: the first line that repeats one is named */
	f = text("/c/cafe 3\n/a/abbey 0\n/b/bar 1\n/a/abbey 2\n/b/bar 4\n");
	assert_int_equal(mp_categories_read(f, "c.txt", &names, &n, &e), -1);
	assert_string_equal(e.msg, "c.txt line 4: class name \"/a/abbey\" is class 0's already "
				   "(line 2)");
	fclose(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(train_list),
		cmocka_unit_test(comments_blank_crlf_spaces),
		cmocka_unit_test(utf8_bom_ignored),
		cmocka_unit_test(test_list_without_labels),
		cmocka_unit_test(label_out_of_range_names_line),
		cmocka_unit_test(mixed_labels_rejected),
		cmocka_unit_test(nul_byte_rejected),
		cmocka_unit_test(utf16_and_cr_line_ends_named),
		cmocka_unit_test(shuffle_is_seeded_permutation),
		cmocka_unit_test(categories),
		cmocka_unit_test(categories_gaps_and_duplicates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
