# sandboxd and vmctl cases, sourced by tests/integration/run (its helpers:
# report, RESULTS, BUILD). tests/integration/api_test.py runs a real daemon
# with real VMs and prints "OK name" / "FAIL name: why" per case.

while IFS= read -r line; do
	case "$line" in
	"OK "*) report OK "$(echo "${line#OK }" | cut -d' ' -f1)" ;;
	"FAIL "*)
		rest=${line#FAIL }
		report FAIL "${rest%%:*}" "${rest#*: }"
		;;
	"exit 0") ;;
	"exit "*) report FAIL api-test-runner "api_test.py ended with status ${line#exit }" ;;
	*) echo "# $line" ;;
	esac
done < <(timeout -k 5 3000 python3 tests/integration/api_test.py "$BUILD" "$RESULTS" 2>"$RESULTS/api_test.err"; echo "exit $?")
grep -q . "$RESULTS/api_test.err" && tail -20 "$RESULTS/api_test.err" | sed 's/^/# api_test: /'
