// echo-lm: the one binary (spec §6). Each subcommand group registers itself
// here in one line; see train/cli.h for the conventions.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "train/cli.h"
#include "train/distributed.h"

// OpenMP threads that wait by spinning burn whole time slices when the machine
// has more runnable threads than cores (a shared 2-core machine, CI): measured
// here, a training step ran 5× slower. Passive waiting costs little when the
// machine is quiet, so the binary asks for it unless the user chose a policy.
// libgomp reads the variable when it loads, hence the one re-exec.
static void prefer_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

int main(int argc, char** argv) {
  prefer_passive_openmp_wait(argv);
  // Under mpirun this process is one rank of a data-parallel job (train/distributed.h).
  echo::dist::init(&argc, &argv);
  CLI::App app{"echo-lm: the Echo engine's command line (spec §6). Run `echo-lm <command> --help` for each command."};
  app.require_subcommand(0, 1);
  app.set_help_all_flag("--help-all", "print the help of every command");

  echo::cli::add_train_commands(app);
  echo::cli::add_model_commands(app);
  echo::cli::add_op_commands(app);
  echo::cli::add_bench_commands(app);
  echo::cli::add_experiment_commands(app);
  echo::cli::add_data_commands(app);

  try {
    std::string commands;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
      known = known || (argc > 1 && sub->get_name() == argv[1]);
    }
    if (argc > 1 && argv[1][0] != '-' && !known)
      throw std::runtime_error("unknown command '" + std::string(argv[1]) + "' (commands: " + commands + ")");
    app.parse(argc, argv);
    if (app.get_subcommands().empty())
      throw std::runtime_error("no command given (commands: " + commands + "; see --help)");
  } catch (const CLI::ParseError& e) {
    // --help and --help-all exit 0; CLI::RuntimeError(code) is a command that
    // already reported its outcome (e.g. gradcheck FAIL) and only sets the status.
    // Every rank parsed the same command line: rank 0 alone answers.
    int status = e.get_exit_code();
    if (e.get_exit_code() == 0 || e.get_name() == "RuntimeError") {
      if (echo::dist::is_root()) status = app.exit(e);
    } else if (echo::dist::is_root()) {
      std::cerr << "echo-lm: " << e.what() << " (see --help)\n";
    }
    echo::dist::finalize();
    return status;
  } catch (const std::exception& e) {
    // One line: a message that spans lines is folded so scripts can grep it.
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    // One rank's error ends the whole job, reported by rank 0 (train/distributed.h).
    if (echo::dist::size() > 1) echo::dist::fail(msg);
    std::cerr << "echo-lm: " << msg << "\n";
    echo::dist::finalize();
    return 1;
  }
  echo::dist::finalize();
  return 0;
}
