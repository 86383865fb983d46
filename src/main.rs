fn main() -> std::process::ExitCode {
    voltd::cli::main()
}
