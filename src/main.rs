fn main() -> std::process::ExitCode {
    cdc_bridge::cli::main()
}
