# baton-agent fixed script. Parameters arrive as JSON in $env:BATON_PARAMS and are only ever
# used as values; nothing is spliced into script text. The result is one line of JSON on stdout.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
trap { [Console]::Error.WriteLine($_.Exception.Message); exit 1 }
$P = $env:BATON_PARAMS | ConvertFrom-Json
function Write-Result($Value) { [Console]::Out.WriteLine((ConvertTo-Json -InputObject $Value -Compress -Depth 6)) }
