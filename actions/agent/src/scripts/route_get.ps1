Write-Result ([ordered]@{ site = $P.site; route = (Read-Route) })
